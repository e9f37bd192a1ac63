"""Clearing at batch close: interchange, scheme fees, chargebacks and the settlement file.

Every amount is an integer in minor units of the row's currency, signed from the merchant's
point of view. Each row satisfies ``gross - interchange - scheme_fee == net``.

=======================  =======  =========================  =====================  ===========
type                     gross    interchange                scheme_fee             net
=======================  =======  =========================  =====================  ===========
``payment``              +amount  rate x amount              5 bp x amount + fixed  gross - fees
``refund``               -amount  0                          5 bp x amount + fixed  -amount - fee
``chargeback``           -amount  -(interchange of payment)  0                      -amount + ic
``fee``                  0        0                          chargeback fee         -fee
``chargeback_reversal``  +amount  +(interchange of payment)  0                      amount - ic
=======================  =======  =========================  =====================  ===========

A ``chargeback_reversal`` (a representment won) is the chargeback row with its signs
turned, in the first batch of the merchant closed after the decision; the chargeback fee
is not refunded.

Interchange: 0.20 % (20 bp) on debit cards, 0.30 % (30 bp) on credit cards. Scheme fee:
0.05 % (5 bp) plus 0.02 of the currency's major unit. Chargeback fee: 15.00 major units.
Percentages round half up to the minor unit.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from psp_server.cardnet.issuers import Funding
from psp_server.domain.money import exponent

INTERCHANGE_BPS: dict[Funding, int] = {Funding.DEBIT: 20, Funding.CREDIT: 30}
SCHEME_FEE_BPS = 5
SCHEME_FEE_FIXED_HUNDREDTHS = 2  # 0.02 major units
CHARGEBACK_FEE_MAJOR = 15
CHARGEBACK_REASON = "FR01"  # fraud: cardholder did not authorize


def bps_of(amount_minor: int, bps: int) -> int:
    """``bps`` basis points of a non-negative amount, rounded half up."""
    q, r = divmod(amount_minor * bps, 10_000)
    return q + (1 if r * 2 >= 10_000 else 0)


def fixed_scheme_fee(currency: str) -> int:
    """0.02 major units in minor units, rounded half up (EUR 2, JPY 0, KWD 20)."""
    scale: int = 10 ** exponent(currency)
    q, r = divmod(SCHEME_FEE_FIXED_HUNDREDTHS * scale, 100)
    return q + (1 if r * 2 >= 100 else 0)


def chargeback_fee(currency: str) -> int:
    scale: int = 10 ** exponent(currency)
    return CHARGEBACK_FEE_MAJOR * scale


@dataclass(frozen=True, slots=True)
class SettlementRow:
    batch_id: str
    merchant_id: str
    network_transaction_id: str
    merchant_reference: str
    type: str  # payment | refund | chargeback | fee | chargeback_reversal
    gross: int
    interchange: int
    scheme_fee: int
    net: int
    currency: str
    settlement_date: str  # YYYY-MM-DD


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(SettlementRow))


@dataclass(frozen=True, slots=True)
class Cleared:
    """A captured transaction entering a batch."""

    network_transaction_id: str
    merchant_reference: str
    kind: str  # payment | refund
    amount_minor: int
    currency: str
    funding: Funding
    disputed: bool


def clear(
    items: Iterable[Cleared], *, batch_id: str, merchant_id: str, settlement_date: str
) -> list[SettlementRow]:
    """The settlement rows of one batch, in the order of ``items``; chargebacks follow
    their payment."""
    rows: list[SettlementRow] = []

    def row(c: Cleared, type_: str, gross: int, ic: int, sf: int) -> SettlementRow:
        return SettlementRow(
            batch_id,
            merchant_id,
            c.network_transaction_id,
            c.merchant_reference,
            type_,
            gross,
            ic,
            sf,
            gross - ic - sf,
            c.currency,
            settlement_date,
        )

    for c in items:
        fee = bps_of(c.amount_minor, SCHEME_FEE_BPS) + fixed_scheme_fee(c.currency)
        if c.kind == "refund":
            rows.append(row(c, "refund", -c.amount_minor, 0, fee))
            continue
        ic = bps_of(c.amount_minor, INTERCHANGE_BPS[c.funding])
        rows.append(row(c, "payment", c.amount_minor, ic, fee))
        if c.disputed:
            rows.append(row(c, "chargeback", -c.amount_minor, -ic, 0))
            rows.append(row(c, "fee", 0, 0, chargeback_fee(c.currency)))
    return rows


def reversal_row(
    chargeback: SettlementRow, *, batch_id: str, settlement_date: str
) -> SettlementRow:
    """The ``chargeback_reversal`` row undoing ``chargeback`` (a representment won)."""
    gross, ic = -chargeback.gross, -chargeback.interchange
    return SettlementRow(
        batch_id,
        chargeback.merchant_id,
        chargeback.network_transaction_id,
        chargeback.merchant_reference,
        "chargeback_reversal",
        gross,
        ic,
        0,
        gross - ic,
        chargeback.currency,
        settlement_date,
    )


def render_csv(rows: Iterable[SettlementRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow(astuple(r))
    return buf.getvalue()


def parse_csv(text: str) -> list[SettlementRow]:
    """Read a settlement file back (for the PSP's reconciliation and for tests)."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ValueError("not a settlement file: unexpected columns")
    out = []
    for d in reader:
        out.append(
            SettlementRow(
                d["batch_id"],
                d["merchant_id"],
                d["network_transaction_id"],
                d["merchant_reference"],
                d["type"],
                int(d["gross"]),
                int(d["interchange"]),
                int(d["scheme_fee"]),
                int(d["net"]),
                d["currency"],
                d["settlement_date"],
            )
        )
    return out


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
