"""The gRPC floor of a sale: the calls pay_throughput.py makes (CreatePayment, ResolveQr,
Pay, and the SUCCEEDED event on WatchPayments), answered from memory with messages the
size of the PSP's, on grpc.aio in one process, with no database, ledger or checks. What
the PSP costs beyond this is the PSP; what this costs, no Python PSP on grpc.aio can
avoid. Prints its address, serves until killed.

    python benchmarks/grpc_floor_server.py [HOST:PORT] [uvloop|asyncio]
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bench_server
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protos.scanpay.v1 import common_pb2 as c
from protos.scanpay.v1 import merchant_pb2 as m
from protos.scanpay.v1 import merchant_pb2_grpc as mg
from protos.scanpay.v1 import wallet_pb2 as w
from protos.scanpay.v1 import wallet_pb2_grpc as wg


def qr_payload(pid: str) -> str:
    """A dynamic QR payload of the PSP's length (about 150 characters), naming ``pid``."""
    return (
        f"00020101021226670019COM.SCANPAY.WWW.WW0130{pid}0208QR3K7Z2M5204541153039785404"
        "12345802DE5912BENCH MARKET6006BERLIN62160512ORDER-0000016304ABCD"
    )


class Floor:
    def __init__(self) -> None:
        self.open: dict[str, c.Payment] = {}
        self.watchers: list[asyncio.Queue[m.PaymentEvent]] = []
        self.seq = itertools.count(1)


class Merchant(mg.MerchantServiceServicer):
    def __init__(self, floor: Floor) -> None:
        self.f = floor

    async def CreatePayment(self, request: m.CreatePaymentRequest, context: Any) -> c.Payment:
        dict(context.invocation_metadata())  # the PSP reads its API key from here
        pid = "pay_" + uuid.uuid4().hex[:26].upper()
        p = c.Payment(
            id=pid,
            merchant_id="mer_01JD3" + "0" * 21,
            order_id=request.order_id,
            amount=request.amount,
            status=c.PAYMENT_STATUS_PENDING,
            method=c.PAYMENT_METHOD_QR_DYNAMIC,
            qr_payload=qr_payload(pid),
            pay_url="https://pay.scanpay.example/p/" + "A" * 24,
        )
        p.created_at.GetCurrentTime()
        p.expires_at.GetCurrentTime()
        self.f.open[pid] = p
        return p

    async def WatchPayments(
        self, request: m.WatchPaymentsRequest, context: Any
    ) -> AsyncIterator[m.PaymentEvent]:
        q: asyncio.Queue[m.PaymentEvent] = asyncio.Queue()
        self.f.watchers.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self.f.watchers.remove(q)


class Wallet(wg.WalletServiceServicer):
    def __init__(self, floor: Floor) -> None:
        self.f = floor

    async def Login(self, request: w.LoginRequest, context: Any) -> w.Session:
        return w.Session(access_token="floor-" + request.email)

    async def ResolveQr(self, request: w.ResolveQrRequest, context: Any) -> w.Quote:
        dict(context.invocation_metadata())
        at = request.payload.find("pay_")
        pid = request.payload[at : at + 30]
        return w.Quote(
            quote_id=f"{pid}.{'B' * 80}",
            payable=True,
            scheme="scanpay",
            merchant=w.VerifiedMerchant(id="mer_01JD3", name="Bench Market", city="Berlin"),
            amount=c.Money(amount_minor=1234, currency="EUR"),
        )

    async def Pay(self, request: w.PayRequest, context: Any) -> w.Receipt:
        dict(context.invocation_metadata())
        pid = request.quote_id.split(".", 1)[0]
        p = self.f.open.pop(pid, None) or c.Payment(id=pid)
        p.status = c.PAYMENT_STATUS_SUCCEEDED
        ev = m.PaymentEvent(
            cursor=str(next(self.f.seq)), type=m.PAYMENT_EVENT_TYPE_SUCCEEDED, payment=p
        )
        ev.occurred_at.GetCurrentTime()
        for q in self.f.watchers:
            q.put_nowait(ev)
        r = w.Receipt(
            transaction_id="txn_" + "C" * 26,
            payment_id=pid,
            merchant_name="Bench Market",
            amount=p.amount,
            payer_amount=p.amount,
            balance_after=p.amount,
            order_id=p.order_id,
        )
        r.paid_at.GetCurrentTime()
        return r


async def main(address: str) -> None:
    floor = Floor()
    server = grpc.aio.server()
    mg.add_MerchantServiceServicer_to_server(Merchant(floor), server)
    wg.add_WalletServiceServicer_to_server(Wallet(floor), server)
    await bench_server.serve(server, address, "floor")


if __name__ == "__main__":
    bench_server.run(main)
