"""Where a sale's server CPU goes, RPC by RPC: the PSP server's CPU time per call for each
kind of call in turn (64 concurrent callers, a connection each, as in the throughput
benchmark), next to a bare gRPC echo server and this server's own health check (the floor
any RPC here pays). The differences say what each part costs:

    Pay              = sale - ResolveQr - CreatePayment
    the event stream = sale with a merchant watching - sale (two events per sale)

    .venv/bin/python benchmarks/rpc_cost.py [--seconds 6] [--event-loop uvloop]

SQLite with durable commits, as in benchmarks/pay_throughput.py; one server process
unless --workers says more (their CPU is added up).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pay_throughput import (
    PASSWORD,
    TILLS,
    run_on,
    seed,
    start_echo,
    start_psp,
    tree_cpu_seconds,
)

from protos.scanpay.v1 import (
    common_pb2,
    merchant_pb2,
    merchant_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)

Call = Callable[[int, int], Awaitable[object]]


async def measure(pid: int, seconds: float, concurrency: int, call: Call) -> dict[str, float]:
    """``call(i, n)`` by ``concurrency`` callers for ``seconds``: calls/s and the server's
    and this process's CPU per call."""
    stop = time.perf_counter() + seconds
    done = 0

    async def caller(i: int) -> None:
        nonlocal done
        n = 0
        while time.perf_counter() < stop:
            n += 1
            await call(i, n)
            done += 1

    cpu0, own0, t0 = tree_cpu_seconds(pid), time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - t0
    server = tree_cpu_seconds(pid) - cpu0
    client = time.process_time() - own0
    return {
        "per_s": done / elapsed,
        "server_ms": server / max(done, 1) * 1000,
        "client_ms": client / max(done, 1) * 1000,
    }


def channels(address: str, first: int, count: int) -> list[grpc.aio.Channel]:
    # A distinct argument each keeps grpc from sharing one connection between them.
    return [
        grpc.aio.insecure_channel(
            address,
            options=[("grpc.use_local_subchannel_pool", 1), ("scanpay.bench_connection", n)],
        )
        for n in range(first, first + count)
    ]


async def psp_phases(
    address: str, pid: int, api_key: str, emails: list[str], seconds: float, concurrency: int
) -> dict[str, dict[str, float]]:
    till_ch = channels(address, 0, TILLS)
    phone_ch = channels(address, TILLS, concurrency)
    tills = [merchant_pb2_grpc.MerchantServiceStub(c) for c in till_ch]
    phones = [wallet_pb2_grpc.WalletServiceStub(c) for c in phone_ch]
    health = [health_pb2_grpc.HealthStub(c) for c in phone_ch]
    md_m = (("authorization", f"Bearer {api_key}"),)
    md_w = []
    for e in emails:
        s = await phones[0].Login(wallet_pb2.LoginRequest(email=e, password=PASSWORD))
        md_w.append((("authorization", f"Bearer {s.access_token}"),))

    async def create(i: int, n: int) -> common_pb2.Payment:
        p: common_pb2.Payment = await tills[i % TILLS].CreatePayment(
            merchant_pb2.CreatePaymentRequest(
                order_id=f"R{i}-{n}-{uuid.uuid4().hex[:8]}",
                amount=common_pb2.Money(amount_minor=100 + n % 900, currency="EUR"),
                idempotency_key=uuid.uuid4().hex,
            ),
            metadata=md_m,
        )
        return p

    open_qr = (await create(0, 0)).qr_payload

    async def check(i: int, n: int) -> object:
        return await health[i].Check(health_pb2.HealthCheckRequest(service=""))

    async def balance(i: int, n: int) -> object:
        return await phones[i].GetBalance(wallet_pb2.GetBalanceRequest(), metadata=md_w[i])

    async def resolve(i: int, n: int) -> object:
        return await phones[i].ResolveQr(
            wallet_pb2.ResolveQrRequest(payload=open_qr), metadata=md_w[i]
        )

    async def sale(i: int, n: int) -> object:
        p = await create(i, n)
        q = await phones[i].ResolveQr(
            wallet_pb2.ResolveQrRequest(payload=p.qr_payload), metadata=md_w[i]
        )
        return await phones[i].Pay(
            wallet_pb2.PayRequest(quote_id=q.quote_id, idempotency_key=uuid.uuid4().hex),
            metadata=md_w[i],
        )

    out = {}
    for name, call in (
        ("health check", check),
        ("GetBalance", balance),
        ("ResolveQr", resolve),
        ("CreatePayment", create),
        ("sale", sale),
    ):
        out[name] = await measure(pid, seconds, concurrency, call)

    # The same sales with the merchant's stream attached (caught up first).
    received = 0

    async def watch() -> None:
        nonlocal received
        call = tills[0].WatchPayments(
            merchant_pb2.WatchPaymentsRequest(after_cursor=""), metadata=md_m
        )
        async for _ in call:
            received += 1

    watcher = asyncio.create_task(watch())
    last = -1
    while received != last:  # the replay of the log so far has ended
        last = received
        await asyncio.sleep(0.5)
    out["sale, merchant watching"] = await measure(pid, seconds, concurrency, sale)
    watcher.cancel()
    for c in till_ch + phone_ch:
        await c.close()
    return out


async def echo_phase(address: str, seconds: float, concurrency: int, pid: int) -> dict[str, float]:
    chans = channels(address, 0, concurrency)
    calls = [c.unary_unary("/bench.Echo/Echo") for c in chans]
    payload = b"x" * 200

    async def echo(i: int, n: int) -> object:
        return await calls[i](payload)

    res = await measure(pid, seconds, concurrency, echo)
    for c in chans:
        await c.close()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    )
    ap.add_argument("--workers", type=int, default=1, help="PSP server processes")
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}

    echo, echo_addr = start_echo(args.event_loop)
    try:
        results["bare echo server"] = run_on(
            args.event_loop, echo_phase(echo_addr, args.seconds, args.concurrency, echo.pid)
        )
    finally:
        echo.terminate()
        echo.wait(timeout=30)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        db = f"sqlite:///{data / 'psp.db'}"
        seeded = seed(data, db, args.concurrency)
        server, address = start_psp(data, db, args.event_loop, args.workers)
        try:
            results.update(
                run_on(
                    args.event_loop,
                    psp_phases(
                        address,
                        server.pid,
                        str(seeded["api_key"]),
                        list(seeded["emails"]),  # type: ignore[call-overload]
                        args.seconds,
                        args.concurrency,
                    ),
                )
            )
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(f"{'calls':<26}{'per s':>8}{'server ms':>11}{'client ms':>11}")
    for name, r in results.items():
        print(f"{name:<26}{r['per_s']:>8.0f}{r['server_ms']:>11.3f}{r['client_ms']:>11.3f}")
    s = {k: v["server_ms"] for k, v in results.items()}
    pay = s["sale"] - s["ResolveQr"] - s["CreatePayment"]
    stream = s["sale, merchant watching"] - s["sale"]
    floor = s["health check"]
    print()
    print(f"Pay (sale - ResolveQr - CreatePayment): {pay:.3f} ms of server CPU")
    print(f"the event stream, per sale (2 events): {stream:.3f} ms")
    print(
        "above the health-check floor, per call: "
        + ", ".join(
            f"{k} {s[k] - floor:+.3f} ms" for k in ("GetBalance", "ResolveQr", "CreatePayment")
        )
        + f", Pay {pay - floor:+.3f} ms"
    )
    print(
        f"a sale's server CPU: {s['sale, merchant watching']:.3f} ms, of which the three "
        f"calls' floor {3 * floor:.3f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
