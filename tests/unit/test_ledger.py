"""Ledger invariants under random operation sequences."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psp_server.domain import ledger
from psp_server.domain.errors import ValidationError
from psp_server.domain.ledger import AccountType, EntryKind, JournalEntry, Posting
from psp_server.domain.money import Money


def test_unbalanced_or_mixed_postings_are_refused() -> None:
    w = ledger.wallet("c", "EUR")
    m = ledger.merchant("m", "USD")
    with pytest.raises(ValidationError):
        Posting(w, m, Money(1, "EUR"))
    with pytest.raises(ValidationError):
        Posting(w, w, Money(1, "EUR"))
    with pytest.raises(ValidationError):
        Posting(w, ledger.merchant("m", "EUR"), Money(0, "EUR"))


def test_reversal_undoes_an_entry() -> None:
    e = JournalEntry(
        "txn_1",
        EntryKind.PAYMENT,
        ledger.payment_postings(
            payer=ledger.wallet("c", "EUR"),
            payer_amount=Money(1000, "EUR"),
            merchant_account=ledger.merchant("m", "EUR"),
            amount=Money(1000, "EUR"),
            fee=Money(10, "EUR"),
        ),
    )
    total: dict[ledger.AccountRef, int] = defaultdict(int)
    for entry in (e, e.reversed("txn_2")):
        for ref, d in ledger.balance_deltas(entry.postings).items():
            total[ref] += d
    assert all(v == 0 for v in total.values())


op = st.one_of(
    st.tuples(st.just("top_up"), st.integers(0, 3), st.integers(1, 50_000)),
    st.tuples(st.just("pay"), st.integers(0, 3), st.integers(1, 20_000)),
    st.tuples(st.just("pay_fx"), st.integers(0, 3), st.integers(1, 2_000)),
    st.tuples(st.just("refund"), st.integers(0, 50), st.integers(1, 20_000)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(op, max_size=60), st.integers(0, 300))
def test_random_sequences_keep_the_books_balanced(
    ops: list[tuple[str, int, int]], bps: int
) -> None:
    """Apply random top-ups, payments (same currency and FX) and refunds the way the
    services do; every entry balances per currency, wallets never go negative, and the
    money in the system is conserved: what the PSP holds equals what it owes."""
    bal: dict[ledger.AccountRef, int] = defaultdict(int)
    payments: list[dict[str, int | str]] = []

    def apply(entry: JournalEntry) -> bool:
        deltas = ledger.balance_deltas(entry.postings)
        if any(bal[r] + d < 0 for r, d in deltas.items() if r.type in ledger.NON_NEGATIVE):
            return False  # the store refuses: INSUFFICIENT_FUNDS, nothing applied
        for r, d in deltas.items():
            bal[r] += d
        assert all(v == 0 for v in ledger.net_by_currency(entry.postings).values())
        return True

    for kind, who, amount in ops:
        wallet = ledger.wallet(f"c{who}", "EUR")
        if kind == "top_up":
            apply(
                JournalEntry(
                    "t",
                    EntryKind.TOP_UP,
                    (
                        Posting(
                            ledger.psp(AccountType.FUNDING, "EUR"), wallet, Money(amount, "EUR")
                        ),
                    ),
                )
            )
        elif kind in ("pay", "pay_fx"):
            fx = kind == "pay_fx"
            amount_m = Money(amount * 160 if fx else amount, "JPY" if fx else "EUR")
            payer = Money(amount, "EUR")
            merchant = ledger.merchant("m", amount_m.currency)
            fee = amount_m.percent_bps(bps)
            ok = apply(
                JournalEntry(
                    "p",
                    EntryKind.PAYMENT,
                    ledger.payment_postings(
                        payer=wallet,
                        payer_amount=payer,
                        merchant_account=merchant,
                        amount=amount_m,
                        fee=fee,
                    ),
                )
            )
            if ok:
                payments.append(
                    {
                        "who": who,
                        "amount": amount_m.amount_minor,
                        "cur": amount_m.currency,
                        "payer": amount,
                        "fee": fee.amount_minor,
                        "refunded": 0,
                    }
                )
        elif payments:
            p = payments[who % len(payments)]
            left = int(p["amount"]) - int(p["refunded"])
            r = min(amount, left)
            if r <= 0:
                continue
            total, before = int(p["amount"]), int(p["refunded"])
            fee_back = int(p["fee"]) * (before + r) // total - int(p["fee"]) * before // total
            payer_back = int(p["payer"]) * (before + r) // total - int(p["payer"]) * before // total
            cur = str(p["cur"])
            assert apply(
                JournalEntry(
                    "r",
                    EntryKind.REFUND,
                    ledger.refund_postings(
                        payer=ledger.wallet(f"c{p['who']}", "EUR"),
                        payer_refund=Money(payer_back, "EUR"),
                        merchant_account=ledger.merchant("m", cur),
                        amount=Money(r, cur),
                        fee_refund=Money(fee_back, cur),
                    ),
                )
            )
            p["refunded"] = before + r

    # Conservation per currency: debit-normal holdings == credit-normal obligations.
    for cur in ("EUR", "JPY"):
        held = sum(v for r, v in bal.items() if r.currency == cur and not r.type.credit_normal)
        owed = sum(v for r, v in bal.items() if r.currency == cur and r.type.credit_normal)
        assert held == owed
    assert all(v >= 0 for r, v in bal.items() if r.type is AccountType.WALLET)
