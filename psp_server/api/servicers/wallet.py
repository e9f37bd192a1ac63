"""WalletService: translate, call the use case, translate back."""

from __future__ import annotations

from typing import Any

import grpc

from protos.scanpay.v1 import wallet_pb2 as w
from psp_server.api import mapping
from psp_server.api.auth import bearer
from psp_server.api.errors import handles_errors
from psp_server.service.auth import ConsumerPrincipal
from psp_server.service.common import Idem, check_key
from psp_server.service.wallet import PayCommand, WalletServices

Ctx = grpc.aio.ServicerContext[Any, Any]


class WalletServicer:
    """Every method of `scanpay.v1.WalletService` (registered by `api.server.add_service`)."""

    def __init__(self, services: WalletServices) -> None:
        self._s = services

    def _who(self, context: Ctx) -> ConsumerPrincipal:
        return self._s.authenticate(bearer(context))

    def _idem(self, who: ConsumerPrincipal, rpc: str, key: str, request: Any) -> Idem:
        return Idem(f"con:{who.consumer_id}:{rpc}", check_key(key), mapping.request_hash(request))

    @handles_errors
    async def Register(self, request: w.RegisterRequest, context: Ctx) -> w.Session:
        s = await self._s.register(
            request.email, request.password, request.currency, request.display_name
        )
        return mapping.session_pb(s)

    @handles_errors
    async def Login(self, request: w.LoginRequest, context: Ctx) -> w.Session:
        return mapping.session_pb(await self._s.login(request.email, request.password))

    @handles_errors
    async def Refresh(self, request: w.RefreshRequest, context: Ctx) -> w.Session:
        return mapping.session_pb(await self._s.refresh(request.refresh_token))

    @handles_errors
    async def GetBalance(self, request: w.GetBalanceRequest, context: Ctx) -> w.Balance:
        return mapping.balance_pb(await self._s.get_balance(self._who(context)))

    @handles_errors
    async def TopUp(self, request: w.TopUpRequest, context: Ctx) -> bytes:
        who = self._who(context)
        idem = self._idem(who, "TopUp", request.idempotency_key, request)
        blob = await self._s.top_up(
            who, request.amount.amount_minor, request.amount.currency, idem, mapping.balance_bytes
        )
        return blob

    @handles_errors
    async def ResolveQr(self, request: w.ResolveQrRequest, context: Ctx) -> w.Quote:
        who = self._who(context)
        q = await self._s.resolve_qr(
            who, request.payload, request.amount.amount_minor, request.amount.currency
        )
        return mapping.quote_pb(q)

    @handles_errors
    async def Pay(self, request: w.PayRequest, context: Ctx) -> bytes:
        who = self._who(context)
        idem = self._idem(who, "Pay", request.idempotency_key, request)
        cmd = PayCommand(
            quote_id=request.quote_id,
            payload=request.payload,
            amount_minor=request.amount.amount_minor,
            currency=request.amount.currency,
            reference=request.reference,
        )
        blob = await self._s.pay(who, cmd, idem, mapping.receipt_bytes)
        return blob

    @handles_errors
    async def ListTransactions(
        self, request: w.ListTransactionsRequest, context: Ctx
    ) -> w.ListTransactionsResponse:
        who = self._who(context)
        rows, nxt = await self._s.list_transactions(who, request.page_size, request.page_token)
        return w.ListTransactionsResponse(
            transactions=[mapping.transaction_pb(a) for a in rows], next_page_token=nxt
        )
