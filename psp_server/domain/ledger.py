"""Double-entry ledger: append-only journal entries of balanced postings.

A posting moves an amount from the debit account to the credit account; an entry is
balanced per currency by construction (every posting debits and credits the same
amount), and we check that both legs of each posting share the entry's currencies.
Balances are derived: each account type has a normal side. Corrections are reversing
entries, never edits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from psp_server.domain.errors import ValidationError
from psp_server.domain.money import Money


class AccountType(StrEnum):
    # What the PSP owes (credit-normal).
    WALLET = "wallet"  # a consumer's stored value
    MERCHANT = "merchant"  # what the PSP owes a merchant
    FEE_REVENUE = "fee_revenue"  # the PSP's merchant discount income
    FX_REVENUE = "fx_revenue"  # the PSP's FX markup income (recorded by the FX position)
    # What the PSP holds or is owed (debit-normal).
    FUNDING = "funding"  # money received from banks for top-ups
    FX_POSITION = "fx_position"  # currency bought/sold when converting
    CARD_RECEIVABLE = "card_receivable"  # due from the card network
    CARD_FEES = "card_fees"  # interchange and scheme fees paid
    CARD_HOLDS = "card_holds"  # card authorizations not captured yet (pending)
    # Credit-normal counterparts for cards, per merchant.
    CARD_HOLDS_PAYABLE = "card_holds_payable"  # what a live hold would owe the merchant
    MERCHANT_PENDING = "merchant_pending"  # captured card money not settled yet

    @property
    def credit_normal(self) -> bool:
        return self in (
            AccountType.WALLET,
            AccountType.MERCHANT,
            AccountType.FEE_REVENUE,
            AccountType.FX_REVENUE,
            AccountType.CARD_HOLDS_PAYABLE,
            AccountType.MERCHANT_PENDING,
        )


# Wallets must never go negative; other accounts may (a merchant after a refund).
NON_NEGATIVE = frozenset({AccountType.WALLET})


@dataclass(frozen=True, slots=True)
class AccountRef:
    type: AccountType
    owner: str  # consumer or merchant id; "" for the PSP's own accounts
    currency: str


@dataclass(frozen=True, slots=True)
class Posting:
    debit: AccountRef
    credit: AccountRef
    amount: Money

    def __post_init__(self) -> None:
        if self.amount.amount_minor <= 0:
            raise ValidationError("a posting moves a positive amount", reason="INVALID_POSTING")
        if self.debit == self.credit:
            raise ValidationError("a posting needs two accounts", reason="INVALID_POSTING")
        if not (self.debit.currency == self.credit.currency == self.amount.currency):
            raise ValidationError("a posting stays in one currency", reason="INVALID_POSTING")


class EntryKind(StrEnum):
    TOP_UP = "top_up"
    PAYMENT = "payment"
    REFUND = "refund"
    REVERSAL = "reversal"
    CARD_CAPTURE = "card_capture"
    CARD_SETTLEMENT = "card_settlement"
    CHARGEBACK = "chargeback"
    CARD_HOLD = "card_hold"
    CARD_FEES = "card_fees"
    CARD_PAYOUT = "card_payout"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: str
    kind: EntryKind
    postings: tuple[Posting, ...]
    payment_id: str | None = None
    memo: str = ""

    def __post_init__(self) -> None:
        if not self.postings:
            raise ValidationError("an entry needs postings", reason="INVALID_POSTING")
        if any(v != 0 for v in net_by_currency(self.postings).values()):
            raise ValidationError("entry does not balance", reason="UNBALANCED_ENTRY")

    def reversed(self, new_id: str, memo: str = "") -> JournalEntry:
        return JournalEntry(
            id=new_id,
            kind=EntryKind.REVERSAL,
            postings=tuple(Posting(p.credit, p.debit, p.amount) for p in self.postings),
            payment_id=self.payment_id,
            memo=memo or f"reversal of {self.id}",
        )


def net_by_currency(postings: Iterable[Posting]) -> dict[str, int]:
    """Sum of debits minus credits per currency: zero for a balanced set."""
    net: dict[str, int] = defaultdict(int)
    for p in postings:
        net[p.debit.currency] += p.amount.amount_minor
        net[p.credit.currency] -= p.amount.amount_minor
    return dict(net)


def balance_deltas(postings: Iterable[Posting]) -> dict[AccountRef, int]:
    """The change of each account's balance on its normal side."""
    out: dict[AccountRef, int] = defaultdict(int)
    for p in postings:
        a = p.amount.amount_minor
        out[p.debit] += -a if p.debit.type.credit_normal else a
        out[p.credit] += a if p.credit.type.credit_normal else -a
    return dict(out)


def psp(type_: AccountType, currency: str) -> AccountRef:
    return AccountRef(type_, "", currency)


def wallet(consumer_id: str, currency: str) -> AccountRef:
    return AccountRef(AccountType.WALLET, consumer_id, currency)


def merchant(merchant_id: str, currency: str) -> AccountRef:
    return AccountRef(AccountType.MERCHANT, merchant_id, currency)


def payment_postings(
    *,
    payer: AccountRef,
    payer_amount: Money,
    merchant_account: AccountRef,
    amount: Money,
    fee: Money,
) -> tuple[Posting, ...]:
    """Consumer pays merchant; the PSP keeps its fee. Cross-currency goes through the FX
    position: the wallet's currency is bought in, the merchant's paid out."""
    out: list[Posting] = []
    if payer_amount.currency == amount.currency:
        if amount != payer_amount:
            raise ValidationError("same-currency amounts differ", reason="INVALID_POSTING")
        out.append(Posting(payer, merchant_account, amount))
    else:
        out.append(
            Posting(payer, psp(AccountType.FX_POSITION, payer_amount.currency), payer_amount)
        )
        out.append(Posting(psp(AccountType.FX_POSITION, amount.currency), merchant_account, amount))
    if fee.amount_minor:
        out.append(Posting(merchant_account, psp(AccountType.FEE_REVENUE, fee.currency), fee))
    return tuple(out)


def refund_postings(
    *,
    payer: AccountRef,
    payer_refund: Money,
    merchant_account: AccountRef,
    amount: Money,
    fee_refund: Money,
) -> tuple[Posting, ...]:
    out: list[Posting] = []
    if payer_refund.currency == amount.currency:
        out.append(Posting(merchant_account, payer, amount))
    else:
        out.append(Posting(merchant_account, psp(AccountType.FX_POSITION, amount.currency), amount))
        if payer_refund.amount_minor:
            out.append(
                Posting(psp(AccountType.FX_POSITION, payer_refund.currency), payer, payer_refund)
            )
    if fee_refund.amount_minor:
        out.append(
            Posting(psp(AccountType.FEE_REVENUE, fee_refund.currency), merchant_account, fee_refund)
        )
    return tuple(out)
