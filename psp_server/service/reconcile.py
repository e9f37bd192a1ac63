"""Reconciliation: the network's settlement file against the PSP's own records.

For each batch named in the file, the PSP expects one ``payment`` row per card payment it
put in that batch (its captured amount), one ``refund`` row per card refund, for every
chargeback a ``chargeback`` and a ``fee`` row, and for every dispute won (representment) a
``chargeback_reversal`` row (+amount) in the batch whose file carried it at close. Fees are
compared with what was booked when the batch closed. Every row gets one status:

``matched``, ``missing_in_file`` (the PSP has it, the file does not), ``missing_in_ledger``
(the file has it, the PSP does not), ``amount_mismatch`` (gross differs) or
``fee_mismatch`` (interchange or scheme fee differs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from psp_server.adapters.card_store import CardStore
from psp_server.adapters.store import SqlStore
from psp_server.cardnet.settlement import SettlementRow

MATCHED = "matched"
MISSING_IN_FILE = "missing_in_file"
MISSING_IN_LEDGER = "missing_in_ledger"
AMOUNT_MISMATCH = "amount_mismatch"
FEE_MISMATCH = "fee_mismatch"
STATUSES = (MATCHED, MISSING_IN_FILE, MISSING_IN_LEDGER, AMOUNT_MISMATCH, FEE_MISMATCH)


@dataclass(frozen=True, slots=True)
class Finding:
    status: str
    batch_id: str
    network_transaction_id: str
    type: str
    currency: str
    file_gross: int | None
    ledger_gross: int | None
    file_fees: int | None  # interchange + scheme fee
    ledger_fees: int | None
    payment_id: str | None = None


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for f in self.findings:
            out[f.status] += 1
        return out

    @property
    def ok(self) -> bool:
        return all(f.status == MATCHED for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts,
            "findings": [asdict(f) for f in self.findings],
        }


@dataclass(frozen=True, slots=True)
class _Expected:
    gross: int
    fees: int | None
    currency: str
    payment_id: str | None


def _expected(store: SqlStore, batch_id: str) -> dict[tuple[str, str], _Expected]:
    cs = CardStore(store)
    booked = {
        (r["network_transaction_id"], r["type"]): int(r["interchange_minor"])
        + int(r["scheme_fee_minor"])
        for r in cs.settlements_for(batch_id)
    }
    out: dict[tuple[str, str], _Expected] = {}

    def add(ntid: str, type_: str, gross: int, cur: str, pid: str | None) -> None:
        out[(ntid, type_)] = _Expected(gross, booked.get((ntid, type_)), cur, pid)

    for r in cs.cards_in_batch(batch_id):
        ntid = r["network_transaction_id"] or ""
        add(ntid, "payment", int(r["captured_minor"] or 0), r["currency"], r["payment_id"])
    for r in cs.refunds_in_batch(batch_id):
        add(
            r["network_transaction_id"] or "",
            "refund",
            -int(r["amount_minor"]),
            r["currency"],
            r["payment_id"],
        )
    for d in cs.list_disputes():
        if d["batch_id"] != batch_id:
            continue
        ntid = d["network_transaction_id"]
        add(ntid, "chargeback", -int(d["amount_minor"]), d["currency"], d["payment_id"])
        add(ntid, "fee", 0, d["currency"], d["payment_id"])
    # A dispute won (its representment) is reversed in the first batch closed after the
    # decision: the PSP expects the reversal where it booked it at that close.
    for ntid, type_ in booked:
        if type_ != "chargeback_reversal":
            continue
        won = cs.dispute_by_ntid(ntid)
        if won is not None and won["status"] == "won":
            add(ntid, type_, int(won["amount_minor"]), won["currency"], won["payment_id"])
    return out


def reconcile(store: SqlStore, rows: list[SettlementRow]) -> Report:
    report = Report()
    batches = list(dict.fromkeys(r.batch_id for r in rows))
    expected: dict[tuple[str, str, str], _Expected] = {}
    for b in batches:
        for (ntid, type_), e in _expected(store, b).items():
            expected[(b, ntid, type_)] = e
    seen: set[tuple[str, str, str]] = set()
    for r in rows:
        key = (r.batch_id, r.network_transaction_id, r.type)
        fees = r.interchange + r.scheme_fee
        hit = expected.get(key)
        if hit is None or key in seen:
            report.findings.append(
                Finding(
                    MISSING_IN_LEDGER,
                    r.batch_id,
                    r.network_transaction_id,
                    r.type,
                    r.currency,
                    r.gross,
                    None,
                    fees,
                    None,
                )
            )
            continue
        seen.add(key)
        e = hit
        if r.gross != e.gross or r.currency != e.currency:
            status = AMOUNT_MISMATCH
        elif e.fees is not None and fees != e.fees:
            status = FEE_MISMATCH
        else:
            status = MATCHED
        report.findings.append(
            Finding(
                status,
                r.batch_id,
                r.network_transaction_id,
                r.type,
                r.currency,
                r.gross,
                e.gross,
                fees,
                e.fees,
                e.payment_id,
            )
        )
    for key, x in expected.items():
        if key not in seen:
            report.findings.append(
                Finding(
                    MISSING_IN_FILE,
                    key[0],
                    key[1],
                    key[2],
                    x.currency,
                    None,
                    x.gross,
                    None,
                    x.fees,
                    x.payment_id,
                )
            )
    return report


def batch_files_for(store: SqlStore, day: str) -> list[tuple[str, str]]:
    """(batch id, settlement file path) of the batches settling on ``day``."""
    return [(b["id"], b["settlement_file"]) for b in CardStore(store).batches_settling_on(day)]
