"""Simulated issuing banks, their BIN ranges and cardholder accounts (the test cards).

The network routes a card by its BIN (longest matching prefix) to an issuer. Each issuer
holds accounts: a test card has a fixed behaviour and funding type; any other Luhn-valid
card of a routed BIN is a plain credit account with :data:`DEFAULT_LIMIT_MINOR`.

Limits and balances are counted in minor units of the transaction's currency, per currency:
the simulator does no foreign exchange.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from psp_server.domain.cards import luhn_ok


class Behaviour(StrEnum):
    APPROVE = "approve"
    DO_NOT_HONOR = "do_not_honor"  # 05
    INSUFFICIENT_FUNDS = "insufficient_funds"  # 51
    EXPIRED = "expired"  # 54
    LOST = "lost"  # 41
    STOLEN = "stolen"  # 43
    NO_ANSWER = "no_answer"  # the network never answers
    DISPUTE = "dispute"  # approves; charged back at the batch close after capture


class Funding(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


@dataclass(frozen=True, slots=True)
class Issuer:
    issuer_id: str
    name: str
    bins: tuple[str, ...]  # prefixes; "2221-2720" is a range of equal-length prefixes

    def matches(self, pan: str) -> int:
        """Length of the longest BIN prefix of this issuer matching ``pan`` (0: none)."""
        best = 0
        for b in self.bins:
            low, _, high = b.partition("-")
            high = high or low
            n = len(low)
            if len(pan) >= n and int(low) <= int(pan[:n]) <= int(high):
                best = max(best, n)
        return best


@dataclass(frozen=True, slots=True)
class Account:
    pan: str
    funding: Funding
    limit_minor: int  # credit limit, or the balance of a debit account
    behaviour: Behaviour
    note: str = ""


ISSUERS: tuple[Issuer, ...] = (
    Issuer("400000", "Testbank (behaviour test cards)", ("400000",)),
    Issuer("411111", "Simbank Visa", ("4",)),
    Issuer("555555", "Simbank Mastercard", ("51-55", "2221-2720")),
    Issuer("378282", "Simbank Amex", ("34", "37")),
    Issuer("601111", "Simbank Discover", ("6011", "644-649", "65")),
)

DEFAULT_LIMIT_MINOR = 1_000_000  # 10,000.00 in a two-decimal currency
_BIG = 100_000_000  # 1,000,000.00

TEST_CARDS: dict[str, Account] = {
    a.pan: a
    for a in (
        Account("4111111111111111", Funding.CREDIT, _BIG, Behaviour.APPROVE, "approves"),
        Account(
            "4242424242424242",
            Funding.DEBIT,
            500_000,
            Behaviour.APPROVE,
            "approves; debit, balance 5,000.00 (more: 51)",
        ),
        Account("5555555555554444", Funding.CREDIT, _BIG, Behaviour.APPROVE, "approves"),
        Account("5200828282828210", Funding.DEBIT, _BIG, Behaviour.APPROVE, "approves; debit"),
        Account("378282246310005", Funding.CREDIT, _BIG, Behaviour.APPROVE, "approves"),
        Account("6011111111111117", Funding.CREDIT, _BIG, Behaviour.APPROVE, "approves"),
        Account("4000000000000002", Funding.CREDIT, _BIG, Behaviour.DO_NOT_HONOR, "05"),
        Account("4000000000009995", Funding.DEBIT, 0, Behaviour.INSUFFICIENT_FUNDS, "51"),
        Account("4000000000000069", Funding.CREDIT, _BIG, Behaviour.EXPIRED, "54"),
        Account("4000000000009987", Funding.CREDIT, _BIG, Behaviour.LOST, "41"),
        Account("4000000000009979", Funding.CREDIT, _BIG, Behaviour.STOLEN, "43"),
        Account("4000000000000119", Funding.CREDIT, _BIG, Behaviour.NO_ANSWER, "never answers"),
        Account("4000000000000259", Funding.CREDIT, _BIG, Behaviour.DISPUTE, "approves; disputed"),
    )
}


def route(pan: str) -> Issuer | None:
    """The issuer whose BIN range matches ``pan`` most specifically."""
    if not pan.isdigit():
        return None
    best: tuple[int, Issuer | None] = (0, None)
    for issuer in ISSUERS:
        n = issuer.matches(pan)
        if n > best[0]:
            best = (n, issuer)
    return best[1]


def account_for(pan: str) -> Account | None:
    """The cardholder account: a test card, a default credit account, or ``None``
    when the number is not Luhn-valid."""
    if pan in TEST_CARDS:
        return TEST_CARDS[pan]
    if not luhn_ok(pan):
        return None
    return Account(pan, Funding.CREDIT, DEFAULT_LIMIT_MINOR, Behaviour.APPROVE, "default")


_BEHAVIOUR_CODES = {
    Behaviour.DO_NOT_HONOR: "05",
    Behaviour.EXPIRED: "54",
    Behaviour.LOST: "41",
    Behaviour.STOLEN: "43",
}


def decide_debit(
    account: Account, amount_minor: int, available_minor: int, *, card_expired: bool
) -> str:
    """Response code for a purchase or authorization of ``amount_minor``."""
    if account.behaviour in _BEHAVIOUR_CODES:
        return _BEHAVIOUR_CODES[account.behaviour]
    if card_expired:
        return "54"
    if amount_minor <= 0:
        return "13"
    if account.behaviour is Behaviour.INSUFFICIENT_FUNDS or amount_minor > available_minor:
        return "51"
    return "00"


# A representment (0600) wins when its evidence holds at least this many characters
# other than blanks; shorter or no evidence loses and the chargeback stands.
MIN_EVIDENCE_CHARS = 20


def decide_representment(evidence: str) -> bool:
    """The issuer's decision on a merchant's representment of a chargeback: ``True`` (won,
    the chargeback is reversed) when field 72 holds at least :data:`MIN_EVIDENCE_CHARS`
    non-blank characters, else ``False`` (lost, it stands). Deterministic: the same evidence
    always gets the same decision."""
    return sum(1 for ch in evidence if not ch.isspace()) >= MIN_EVIDENCE_CHARS
