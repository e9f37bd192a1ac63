"""The real store and services on SQLite and PostgreSQL: random sequences of top-ups,
payments and refunds (through the same use cases the gRPC API calls) leave a ledger
whose every entry balances, whose cached balances equal the sum of postings, and whose
wallets are never negative."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protos.scanpay.v1 import common_pb2
from psp_server.api import mapping
from psp_server.bootstrap import App, build_app
from psp_server.config import Settings
from psp_server.domain.errors import DomainError
from psp_server.service.auth import ConsumerPrincipal, MerchantPrincipal
from psp_server.service.common import Idem
from psp_server.service.merchant import CreatePayment, RefundPayment
from psp_server.service.wallet import PayCommand

_n = itertools.count()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    data: Path = tmp_path_factory.mktemp("ledger")
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else ""
    a = build_app(Settings(data_dir=data, db_url=url, secret=b"s" * 32))
    try:
        yield a
    finally:
        a.close()


def idem(scope: str) -> Idem:
    return Idem(scope, uuid.uuid4().hex, str(next(_n)))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("top_up"), st.integers(0, 2), st.integers(1, 30_000)),
        st.tuples(st.just("pay"), st.integers(0, 2), st.integers(1, 20_000)),
        st.tuples(st.just("pay_fx"), st.integers(0, 2), st.integers(1, 200_000)),
        st.tuples(st.just("refund"), st.integers(0, 30), st.integers(1, 20_000)),
    ),
    max_size=25,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops)
def test_random_operations_keep_the_ledger_sound(app: App, ops: list[tuple[str, int, int]]) -> None:
    asyncio.run(_run(app, ops))
    assert app.admin.ledger_check() == []


async def _run(app: App, ops: list[tuple[str, int, int]]) -> None:
    tag = uuid.uuid4().hex[:8]
    eur = app.admin.create_merchant(
        name="Ledger Shop", city="Berlin", country="DE", currency="EUR", mcc="5411"
    )
    jpy = app.admin.create_merchant(
        name="Tokyo Shop", city="Tokyo", country="JP", currency="JPY", mcc="5411"
    )
    app.admin.set_fx_rate("EUR", "JPY", "161.5")
    shops = {}
    for m in (eur, jpy):
        t = app.admin.create_terminal(m.id, "T1")
        shops[m.currency] = MerchantPrincipal(m.id, t.terminal.id, "T1")
    people = []
    for i in range(3):
        c = app.admin.create_consumer(
            email=f"l{i}-{tag}@example.com", password="password1", currency="EUR", kyc_tier=3
        )
        people.append(ConsumerPrincipal(c.id))
    paid: list[tuple[str, str]] = []
    for kind, who, amount in ops:
        con = people[who % 3]
        try:
            if kind == "top_up":
                await app.wallets.top_up(con, amount, "EUR", idem("t"), mapping.balance_bytes)
            elif kind in ("pay", "pay_fx"):
                cur = "JPY" if kind == "pay_fx" else "EUR"
                blob = await app.merchants.create_payment(
                    shops[cur],
                    CreatePayment(f"O{next(_n)}", amount, cur),
                    idem("c"),
                    mapping.payment_bytes,
                )
                p = common_pb2.Payment.FromString(blob)
                q = await app.wallets.resolve_qr(con, p.qr_payload)
                await app.wallets.pay(
                    con, PayCommand(quote_id=q.quote_id), idem("p"), mapping.receipt_bytes
                )
                paid.append((cur, p.id))
            elif paid:
                cur, pid = paid[who % len(paid)]
                await app.merchants.refund_payment(
                    shops[cur], RefundPayment(pid, amount, cur), idem("r"), mapping.payment_bytes
                )
        except DomainError as exc:
            # Refusals are part of the game (no funds, over-refund, limits); they must
            # leave nothing behind, which the ledger check then proves.
            assert exc.reason in {
                "INSUFFICIENT_FUNDS",
                "REFUND_EXCEEDS_CAPTURED",
                "LIMIT_EXCEEDED",
                "PAYMENT_NOT_REFUNDABLE",
                "INVALID_AMOUNT",
            }, exc.reason
    balances = [await app.wallets.get_balance(c) for c in people]
    assert all(b.available.amount_minor >= 0 for b in balances)
