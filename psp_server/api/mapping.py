"""Proto <-> domain conversions, and nothing else."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from protos.scanpay.v1 import common_pb2 as c
from protos.scanpay.v1 import merchant_pb2 as m
from protos.scanpay.v1 import wallet_pb2 as w
from psp_server.domain.errors import ValidationError
from psp_server.domain.money import Money
from psp_server.domain.parties import Activity, Event, Merchant
from psp_server.domain.payments import (
    EventType,
    Payment,
    PaymentMethod,
    PaymentStatus,
    from_snapshot,
)
from psp_server.service.cards import BatchInfo
from psp_server.service.merchant import DailySummary, PaymentFilter, StaticQrInfo
from psp_server.service.wallet import BalanceInfo, QuoteInfo, ReceiptInfo, SessionTokens

STATUS = {
    PaymentStatus.PENDING: c.PAYMENT_STATUS_PENDING,
    PaymentStatus.SUCCEEDED: c.PAYMENT_STATUS_SUCCEEDED,
    PaymentStatus.CANCELED: c.PAYMENT_STATUS_CANCELED,
    PaymentStatus.EXPIRED: c.PAYMENT_STATUS_EXPIRED,
    PaymentStatus.PARTIALLY_REFUNDED: c.PAYMENT_STATUS_PARTIALLY_REFUNDED,
    PaymentStatus.REFUNDED: c.PAYMENT_STATUS_REFUNDED,
    PaymentStatus.AUTHORIZED: c.PAYMENT_STATUS_AUTHORIZED,
    PaymentStatus.DECLINED: c.PAYMENT_STATUS_DECLINED,
    PaymentStatus.VOIDED: c.PAYMENT_STATUS_VOIDED,
    PaymentStatus.DISPUTED: c.PAYMENT_STATUS_DISPUTED,
}
STATUS_IN = {v: k for k, v in STATUS.items()}
METHOD = {
    PaymentMethod.QR_DYNAMIC: c.PAYMENT_METHOD_QR_DYNAMIC,
    PaymentMethod.QR_STATIC: c.PAYMENT_METHOD_QR_STATIC,
    PaymentMethod.CARD: c.PAYMENT_METHOD_CARD,
}
METHOD_IN = {v: k for k, v in METHOD.items()}
EVENT = {
    EventType.CREATED: m.PAYMENT_EVENT_TYPE_CREATED,
    EventType.SUCCEEDED: m.PAYMENT_EVENT_TYPE_SUCCEEDED,
    EventType.CANCELED: m.PAYMENT_EVENT_TYPE_CANCELED,
    EventType.EXPIRED: m.PAYMENT_EVENT_TYPE_EXPIRED,
    EventType.REFUNDED: m.PAYMENT_EVENT_TYPE_REFUNDED,
    EventType.AUTHORIZED: m.PAYMENT_EVENT_TYPE_AUTHORIZED,
    EventType.DECLINED: m.PAYMENT_EVENT_TYPE_DECLINED,
    EventType.VOIDED: m.PAYMENT_EVENT_TYPE_VOIDED,
    EventType.DISPUTED: m.PAYMENT_EVENT_TYPE_DISPUTED,
}
TX_KIND = {
    "payment": w.TRANSACTION_KIND_PAYMENT,
    "refund": w.TRANSACTION_KIND_REFUND,
    "top_up": w.TRANSACTION_KIND_TOP_UP,
}


def request_hash(msg: Message) -> str:
    return hashlib.sha256(msg.SerializeToString(deterministic=True)).hexdigest()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    return ts_req(value)


def from_ts(msg: Timestamp, field: str) -> datetime:
    try:
        return msg.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ValidationError(f"{field} is out of range", reason="INVALID_TIMESTAMP") from None


def money_pb(value: Money | None) -> c.Money | None:
    return (
        None if value is None else c.Money(amount_minor=value.amount_minor, currency=value.currency)
    )


def money_req(value: Money) -> c.Money:
    return c.Money(amount_minor=value.amount_minor, currency=value.currency)


def ts_req(value: datetime) -> Timestamp:
    """Exact to the microsecond (as ``Timestamp.FromDatetime``, without its cost). A
    naive datetime is UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    d = value - _EPOCH
    return Timestamp(seconds=d.days * 86_400 + d.seconds, nanos=d.microseconds * 1000)


def payment_pb(p: Payment) -> c.Payment:
    out = c.Payment(
        id=p.id,
        merchant_id=p.merchant_id,
        order_id=p.order_id,
        amount=money_pb(p.amount),
        status=STATUS[p.status],
        method=METHOD[p.method],
        description=p.description,
        qr_payload=p.qr_payload,
        terminal_id=p.terminal_id or "",
        terminal_label=p.terminal_label,
        refunded=money_pb(p.refunded),
        payer_reference=p.payer_reference,
        created_at=ts(p.created_at),
        updated_at=ts(p.updated_at),
    )
    if p.qr_token and p.method is PaymentMethod.QR_DYNAMIC:
        out.pay_url = _pay_url_base + p.qr_token
    if p.expires_at is not None:
        out.expires_at.CopyFrom(ts_req(p.expires_at))
    if p.paid_at is not None:
        out.paid_at.CopyFrom(ts_req(p.paid_at))
    if p.fee is not None:
        out.fee.CopyFrom(money_req(p.fee))
    if p.fx is not None:
        out.fx.CopyFrom(
            c.FxConversion(
                payer_amount=money_pb(p.fx.payer_amount),
                rate=p.fx.rate,
                locked_until=ts(p.fx.locked_until),
            )
        )
    if p.card is not None:
        out.card.CopyFrom(
            c.CardDetails(
                pan_masked=p.card.pan_masked,
                brand=p.card.brand,
                last4=p.card.last4,
                auth_code=p.card.auth_code,
                response_code=p.card.response_code,
                response_text=p.card.response_text,
                network_transaction_id=p.card.network_transaction_id,
            )
        )
    for r in p.refunds:
        out.refunds.append(
            c.Refund(
                id=r.id, amount=money_pb(r.amount), reason=r.reason, created_at=ts(r.created_at)
            )
        )
    return out


_pay_url_base = "https://pay.scanpay.example/p/"


def batch_bytes(b: BatchInfo) -> bytes:
    return m.Batch(
        id=b.id,
        count=b.count,
        gross=money_pb(b.gross),
        interchange=money_pb(b.interchange),
        scheme_fees=money_pb(b.scheme_fees),
        net=money_pb(b.net),
        closed_at=ts(b.closed_at),
        settlement_file=b.settlement_file,
    ).SerializeToString(deterministic=True)


def set_pay_url_base(base: str) -> None:
    global _pay_url_base
    _pay_url_base = base.rstrip("/") + "/p/"


def payment_bytes(p: Payment) -> bytes:
    return payment_pb(p).SerializeToString()


def event_bytes(ev: Event) -> bytes:
    """The encoded ``PaymentEvent``: from the payment the event was made with when it is
    at hand (a live event of this process), else from the stored snapshot."""
    p = ev.payment if ev.payment is not None else from_snapshot(json.loads(ev.data))
    return event_pb(ev, p).SerializeToString()


def event_pb(ev: Event, payment: Payment) -> m.PaymentEvent:
    return m.PaymentEvent(
        cursor=str(ev.seq),
        type=EVENT[EventType(ev.type)],
        payment=payment_pb(payment),
        occurred_at=ts(ev.occurred_at),
    )


def merchant_pb(mer: Merchant, terminal_id: str, terminal_label: str) -> m.Merchant:
    return m.Merchant(
        id=mer.id,
        name=mer.name,
        city=mer.city,
        country=mer.country,
        currency=mer.currency,
        mcc=mer.mcc,
        discount_rate_bps=mer.discount_rate_bps,
        terminal_id=terminal_id,
        terminal_label=terminal_label,
    )


def filter_in(req: m.ListPaymentsRequest) -> PaymentFilter:
    statuses = []
    for s in req.statuses:
        if s not in STATUS_IN:
            raise ValidationError(f"unknown status {s}", reason="INVALID_STATUS")
        statuses.append(STATUS_IN[s])
    method = None
    if req.method:
        if req.method not in METHOD_IN:
            raise ValidationError(f"unknown method {req.method}", reason="INVALID_METHOD")
        method = METHOD_IN[req.method]
    return PaymentFilter(
        page_size=req.page_size,
        page_token=req.page_token,
        statuses=statuses,
        created_from=from_ts(req.created_from, "created_from")
        if req.HasField("created_from")
        else None,
        created_to=from_ts(req.created_to, "created_to") if req.HasField("created_to") else None,
        order_id=req.order_id,
        method=method,
    )


def static_qr_pb(info: StaticQrInfo) -> m.StaticQr:
    return m.StaticQr(
        qr_payload=info.payload,
        pay_url=info.pay_url,
        merchant_name=info.merchant_name,
        terminal_label=info.terminal_label,
    )


def summary_pb(s: DailySummary) -> m.DailySummary:
    return m.DailySummary(
        date=s.date,
        totals=[
            m.MethodTotal(method=METHOD[t.method], count=t.count, gross=money_pb(t.gross))
            for t in s.totals
        ],
        gross=money_pb(s.gross),
        refunds=money_pb(s.refunds),
        fees=money_pb(s.fees),
        net=money_pb(s.net),
        payment_count=s.payment_count,
        refund_count=s.refund_count,
    )


def session_pb(s: SessionTokens) -> w.Session:
    con = s.consumer
    return w.Session(
        access_token=s.access_token,
        access_expires_at=ts(s.access_expires_at),
        refresh_token=s.refresh_token,
        refresh_expires_at=ts(s.refresh_expires_at),
        consumer=w.Consumer(
            id=con.id,
            email=con.email,
            display_name=con.display_name,
            currency=con.currency,
            kyc_tier=con.kyc_tier,
        ),
    )


def balance_pb(b: BalanceInfo) -> w.Balance:
    return w.Balance(
        available=money_pb(b.available),
        kyc_tier=b.kyc_tier,
        per_payment_limit=money_pb(b.per_payment_limit),
        daily_limit=money_pb(b.daily_limit),
        spent_today=money_pb(b.spent_today),
    )


def balance_bytes(b: BalanceInfo) -> bytes:
    return balance_pb(b).SerializeToString()


def quote_pb(q: QuoteInfo) -> w.Quote:
    out = w.Quote(
        quote_id=q.quote_id,
        payable=q.payable,
        scheme=q.scheme,
        initiation={"static": w.QR_INITIATION_STATIC, "dynamic": w.QR_INITIATION_DYNAMIC}.get(
            q.initiation or "", w.QR_INITIATION_UNSPECIFIED
        ),
        qr_merchant_name=q.qr_merchant_name,
        amount_required=q.amount_required,
        fx_rate=q.fx_rate,
        warnings=[w.Warning(code=x.code, message=x.message) for x in q.warnings],
        payment_id=q.payment_id,
        order_id=q.order_id,
        description=q.description,
    )
    if q.merchant is not None:
        out.merchant.CopyFrom(
            w.VerifiedMerchant(
                id=q.merchant.id,
                name=q.merchant.name,
                city=q.merchant.city,
                country=q.merchant.country,
                mcc=q.merchant.mcc,
            )
        )
    if q.amount is not None:
        out.amount.CopyFrom(money_req(q.amount))
    if q.payer_amount is not None:
        out.payer_amount.CopyFrom(money_req(q.payer_amount))
    if q.expires_at is not None:
        out.expires_at.CopyFrom(ts_req(q.expires_at))
    return out


def receipt_bytes(r: ReceiptInfo) -> bytes:
    return w.Receipt(
        transaction_id=r.transaction_id,
        payment_id=r.payment_id,
        merchant_name=r.merchant_name,
        amount=money_pb(r.amount),
        payer_amount=money_pb(r.payer_amount),
        fx_rate=r.fx_rate,
        balance_after=money_pb(r.balance_after),
        paid_at=ts(r.paid_at),
        order_id=r.order_id,
    ).SerializeToString()


def transaction_pb(a: Activity) -> w.Transaction:
    return w.Transaction(
        id=a.id,
        kind=TX_KIND.get(a.kind, w.TRANSACTION_KIND_UNSPECIFIED),
        amount=c.Money(amount_minor=a.amount_minor, currency=a.currency),
        merchant_name=a.merchant_name,
        payment_id=a.payment_id or "",
        created_at=ts(a.created_at),
        description=a.description,
    )
