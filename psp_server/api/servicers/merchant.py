"""MerchantService: translate, call the use case, translate back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from protos.scanpay.v1 import common_pb2 as c
from protos.scanpay.v1 import merchant_pb2 as m
from psp_server.api import mapping
from psp_server.api.auth import ApiKeys
from psp_server.api.errors import handles_errors
from psp_server.domain.errors import NotImplementedYet, ValidationError
from psp_server.domain.money import Money
from psp_server.service.cards import CardAction, CardServices, SwipeCard
from psp_server.service.common import Idem, check_key
from psp_server.service.events import EventBus
from psp_server.service.merchant import CreatePayment, MerchantServices, RefundPayment

Ctx = grpc.aio.ServicerContext[Any, Any]

_CARD_RAIL = "card payments are not available yet: the card rail is not connected"


def _cursor(text: str) -> int:
    if not text:
        return 0
    # ASCII only: str.isdigit() also takes "²" (which int() refuses) and other scripts' digits.
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ValidationError("malformed cursor", reason="INVALID_CURSOR")
    return int(text)


class MerchantServicer:
    """Every method of `scanpay.v1.MerchantService` (registered by `api.server.add_service`)."""

    def __init__(
        self,
        services: MerchantServices,
        keys: ApiKeys,
        bus: EventBus,
        cards: CardServices | None = None,
    ) -> None:
        self._s = services
        self._keys = keys
        self._bus = bus
        self._cards = cards

    def _card_rail(self) -> CardServices:
        if self._cards is None:
            raise NotImplementedYet(_CARD_RAIL, reason="CARD_RAIL_UNAVAILABLE")
        return self._cards

    def _idem(self, who_id: str, rpc: str, key: str, request: Any) -> Idem:
        return Idem(f"mer:{who_id}:{rpc}", check_key(key), mapping.request_hash(request))

    @handles_errors
    async def GetMerchant(self, request: m.GetMerchantRequest, context: Ctx) -> m.Merchant:
        who = await self._keys.principal(context)
        mer = await self._s.get_merchant(who)
        return mapping.merchant_pb(mer, who.terminal_id, who.terminal_label)

    @handles_errors
    async def CreatePayment(self, request: m.CreatePaymentRequest, context: Ctx) -> bytes:
        who = await self._keys.principal(context)
        cmd = CreatePayment(
            order_id=request.order_id,
            amount_minor=request.amount.amount_minor,
            currency=request.amount.currency,
            description=request.description,
            expires_in_seconds=request.expires_in_seconds,
        )
        idem = self._idem(who.merchant_id, "CreatePayment", request.idempotency_key, request)
        blob = await self._s.create_payment(who, cmd, idem, mapping.payment_bytes)
        return blob

    @handles_errors
    async def GetPayment(self, request: m.GetPaymentRequest, context: Ctx) -> c.Payment:
        who = await self._keys.principal(context)
        return mapping.payment_pb(await self._s.get_payment(who, request.payment_id))

    @handles_errors
    async def CancelPayment(self, request: m.CancelPaymentRequest, context: Ctx) -> bytes:
        who = await self._keys.principal(context)
        idem = self._idem(who.merchant_id, "CancelPayment", request.idempotency_key, request)
        blob = await self._s.cancel_payment(who, request.payment_id, idem, mapping.payment_bytes)
        return blob

    @handles_errors
    async def ListPayments(
        self, request: m.ListPaymentsRequest, context: Ctx
    ) -> m.ListPaymentsResponse:
        who = await self._keys.principal(context)
        rows, nxt = await self._s.list_payments(who, mapping.filter_in(request))
        return m.ListPaymentsResponse(
            payments=[mapping.payment_pb(p) for p in rows], next_page_token=nxt
        )

    @handles_errors
    async def RefundPayment(self, request: m.RefundPaymentRequest, context: Ctx) -> bytes:
        who = await self._keys.principal(context)
        cmd = RefundPayment(
            payment_id=request.payment_id,
            amount_minor=request.amount.amount_minor,
            currency=request.amount.currency,
            reason=request.reason,
        )
        idem = self._idem(who.merchant_id, "RefundPayment", request.idempotency_key, request)
        if self._cards is not None and await self._cards.is_card_payment(who, cmd.payment_id):
            blob = await self._cards.refund(who, cmd, idem, mapping.payment_bytes)
            return blob
        blob = await self._s.refund_payment(who, cmd, idem, mapping.payment_bytes)
        return blob

    @handles_errors
    async def GetStaticQr(self, request: m.GetStaticQrRequest, context: Ctx) -> m.StaticQr:
        who = await self._keys.principal(context)
        return mapping.static_qr_pb(await self._s.get_static_qr(who))

    @handles_errors
    async def GetDailySummary(
        self, request: m.GetDailySummaryRequest, context: Ctx
    ) -> m.DailySummary:
        who = await self._keys.principal(context)
        return mapping.summary_pb(await self._s.daily_summary(who, request.date))

    @handles_errors
    async def WatchPayments(
        self, request: m.WatchPaymentsRequest, context: Ctx
    ) -> AsyncIterator[bytes]:
        """Replay the log after the cursor, then tail it. Subscribing before the replay
        means nothing committed in between is missed; sequence numbers drop repeats."""
        who = await self._keys.principal(context)
        cursor = _cursor(request.after_cursor)
        if cursor and cursor > await self._s.last_event_seq(who.merchant_id):
            # Not a cursor this merchant was ever given (another merchant's, or from a
            # reset database): following it would silently skip the next events.
            raise ValidationError(
                "cursor is ahead of this merchant's event log", reason="INVALID_CURSOR"
            )
        with self._bus.subscribe(who.merchant_id) as sub:
            while True:
                # Catch up from the log (also after a gap or a notice from another replica).
                while True:
                    batch = await self._s.read_events(who.merchant_id, cursor)
                    for ev in batch:
                        yield mapping.event_bytes(ev)
                        cursor = ev.seq
                    if len(batch) < 500:
                        break
                # Tail: take notices in order; read the log only when one is missing.
                while True:
                    notice = await sub.queue.get()
                    if notice.seq <= cursor:
                        continue
                    if notice.seq == cursor + 1 and notice.data is not None:
                        yield notice.data
                        cursor = notice.seq
                        continue
                    if notice.seq == cursor + 1 and notice.event is not None:
                        ev = notice.event
                        yield mapping.event_bytes(ev)
                        cursor = ev.seq
                        continue
                    break

    # -- card rail -------------------------------------------------------------------

    @handles_errors
    async def SwipeCard(self, request: m.SwipeCardRequest, context: Ctx) -> bytes:
        who = await self._keys.principal(context)
        cards = self._card_rail()
        action = _ACTIONS.get(request.action)
        if action is None:
            raise ValidationError("action must be SALE or AUTHORIZE", reason="INVALID_ACTION")
        cmd = SwipeCard(
            track_data=request.track_data,
            amount_minor=request.amount.amount_minor,
            currency=request.amount.currency,
            order_id=request.order_id,
            action=action,
        )
        idem = self._idem(who.merchant_id, "SwipeCard", request.idempotency_key, request)
        return await cards.swipe(who, cmd, idem, mapping.payment_bytes)

    @handles_errors
    async def CapturePayment(self, request: m.CapturePaymentRequest, context: Ctx) -> bytes:
        who = await self._keys.principal(context)
        cards = self._card_rail()
        amount = (
            Money(request.amount.amount_minor, request.amount.currency)
            if request.HasField("amount")
            else None
        )
        idem = self._idem(who.merchant_id, "CapturePayment", request.idempotency_key, request)
        blob = await cards.capture(who, request.payment_id, amount, idem, mapping.payment_bytes)
        return blob

    @handles_errors
    async def VoidPayment(self, request: m.VoidPaymentRequest, context: Ctx) -> bytes:
        who = await self._keys.principal(context)
        cards = self._card_rail()
        idem = self._idem(who.merchant_id, "VoidPayment", request.idempotency_key, request)
        blob = await cards.void(who, request.payment_id, idem, mapping.payment_bytes)
        return blob

    @handles_errors
    async def CloseBatch(self, request: m.CloseBatchRequest, context: Ctx) -> bytes:
        who = await self._keys.principal(context)
        cards = self._card_rail()
        idem = self._idem(who.merchant_id, "CloseBatch", request.idempotency_key, request)
        return await cards.close_batch(who, idem, mapping.batch_bytes)


_ACTIONS = {m.CARD_ACTION_SALE: CardAction.SALE, m.CARD_ACTION_AUTHORIZE: CardAction.AUTHORIZE}
