"""Batch close -> the network's settlement file -> `scanpay reconcile`, with the real
simulator process and the PSP's gRPC API; chargebacks become disputes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from protos.scanpay.v1 import common_pb2 as c
from protos.scanpay.v1 import merchant_pb2 as m
from psp_server.__main__ import main
from psp_server.cardnet.settlement import SettlementRow, parse_csv, render_csv
from tests.api.test_card_api import BACKENDS, Till, backend_url, card_settings
from tests.support.cardnet import CardnetProcess
from tests.support.psp import LivePsp

DISPUTED = "4000000000000259"


@pytest.fixture(scope="module", params=BACKENDS)
def card_psp(
    request: pytest.FixtureRequest,
    cardnet: CardnetProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LivePsp]:
    data = tmp_path_factory.mktemp(f"psp-reconcile-{request.param}")
    with backend_url(request, request.param) as url:
        psp = LivePsp(data, url, settings=card_settings(data, cardnet)).start()
        try:
            yield psp
            assert psp.app.admin.ledger_check() == []
        finally:
            psp.stop()


@pytest.fixture(scope="module")
def closed(card_psp: LivePsp) -> Iterator[tuple[Till, m.Batch, dict[str, c.Payment]]]:
    """One merchant's day: sales, a captured authorization, a refund, a disputed card, an
    authorization left open, a declined card; then the batch closes."""
    t = Till(card_psp, card_psp.create_merchant(discount_rate_bps=100))
    p = {
        "visa": t.swipe("4111111111111111", 8000, order_id="A-1"),
        "debit": t.swipe("4242424242424242", 5000, order_id="A-2"),
        "mc": t.swipe("5555555555554444", 12345, order_id="A-3"),
        "disputed": t.swipe(DISPUTED, 4000, order_id="A-4"),
        "declined": t.swipe("4000000000000002", 100, order_id="A-5"),
        "open": t.swipe("6011111111111117", 700, action=m.CARD_ACTION_AUTHORIZE),
    }
    auth = t.swipe("378282246310005", 3000, action=m.CARD_ACTION_AUTHORIZE, order_id="A-6")
    p["captured"] = t.capture(auth.id, 2500)
    p["refunded"] = t.refund(p["mc"].id, 2345)
    batch = t.close_batch()
    yield t, batch, p
    t.close()


def test_batch_close_books_the_settlement(
    closed: tuple[Till, m.Batch, dict[str, c.Payment]],
) -> None:
    t, batch, p = closed
    assert batch.id and batch.settlement_file.endswith(f"{batch.id}.csv")
    rows = parse_csv(Path(batch.settlement_file).read_text(encoding="utf-8"))
    assert batch.count == len(rows) == 5 + 1 + 2  # payments, the refund, chargeback + fee
    assert batch.gross.amount_minor == sum(r.gross for r in rows)
    assert batch.net.amount_minor == sum(r.net for r in rows)
    assert batch.interchange.amount_minor == sum(r.interchange for r in rows) > 0
    # The disputed card was charged back: a dispute, on the merchant's stream.
    got = t.stub.GetPayment(m.GetPaymentRequest(payment_id=p["disputed"].id), metadata=t.md)
    assert got.status == c.PAYMENT_STATUS_DISPUTED
    events = t.events(100, timeout=2.0)
    assert ("PAYMENT_EVENT_TYPE_DISPUTED", p["disputed"].id) in events
    disputes = t.psp.app.cards.list_disputes(t.creds.merchant_id)
    assert [d.payment_id for d in disputes] == [p["disputed"].id]
    # Payout: every settled payment moved from pending to the merchant's balance, less the
    # markup; the chargeback and its fee came off the balance.
    b = t.balances()
    assert b["merchant_pending"] == 0
    settled = 8000 + 5000 + 12345 + 4000 + 2500
    markup = 80 + 50 + 123 + 40 + 25
    refund_back = 2345 - (123 * 2345 // 12345)
    assert b["merchant"] == settled - markup - refund_back - 4000 - 1500
    # The open authorization is not in the batch: it still holds.
    assert b["card_holds_payable"] == 700
    assert t.psp.app.admin.ledger_check() == []


def _run(psp: LivePsp, tmp: Path, *args: str) -> tuple[int, dict[str, object]]:
    out = tmp / "report.json"
    code = main(["reconcile", *args, "--out", str(out), "--data", str(tmp), "--db", psp.db_url])
    return code, json.loads(out.read_text(encoding="utf-8"))


def test_reconcile_the_file_as_sent_all_matched(
    closed: tuple[Till, m.Batch, dict[str, c.Payment]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    t, batch, _ = closed
    code, report = _run(t.psp, tmp_path, "--file", batch.settlement_file)
    assert code == 0, capsys.readouterr().out
    counts = report["counts"]
    assert isinstance(counts, dict)
    assert counts["matched"] == batch.count
    assert sum(counts.values()) == batch.count
    out = capsys.readouterr().out
    assert "matched" in out and batch.id in out


def test_reconcile_by_date(
    closed: tuple[Till, m.Batch, dict[str, c.Payment]], tmp_path: Path
) -> None:
    t, batch, _ = closed
    day = parse_csv(Path(batch.settlement_file).read_text(encoding="utf-8"))[0].settlement_date
    code, report = _run(t.psp, tmp_path, "--date", day)
    assert code == 0
    assert report["ok"] is True


def test_reconcile_reports_each_difference(
    closed: tuple[Till, m.Batch, dict[str, c.Payment]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    t, batch, p = closed
    rows = parse_csv(Path(batch.settlement_file).read_text(encoding="utf-8"))
    by_ref = {r.merchant_reference: r for r in rows if r.type == "payment"}
    changed = by_ref["A-1"]
    dropped = by_ref["A-2"]
    fee_changed = by_ref["A-6"]
    extra = SettlementRow(
        batch.id,
        t.creds.merchant_id,
        "FFFFFFFFFFFF",
        "X-9",
        "payment",
        999,
        3,
        2,
        994,
        "EUR",
        changed.settlement_date,
    )
    out_rows: list[SettlementRow] = []
    for r in rows:
        if r is dropped:
            continue
        if r is changed:
            r = SettlementRow(
                *[
                    *_t(r)[:5],
                    r.gross + 100,
                    r.interchange,
                    r.scheme_fee,
                    r.net + 100,
                    r.currency,
                    r.settlement_date,
                ]
            )
        if r is fee_changed:
            r = SettlementRow(
                *[
                    *_t(r)[:5],
                    r.gross,
                    r.interchange + 1,
                    r.scheme_fee,
                    r.net - 1,
                    r.currency,
                    r.settlement_date,
                ]
            )
        out_rows.append(r)
    out_rows.append(extra)
    f = tmp_path / "tampered.csv"
    f.write_text(render_csv(out_rows), encoding="utf-8")
    code, report = _run(t.psp, tmp_path, "--file", str(f))
    assert code == 1
    findings = report["findings"]
    assert isinstance(findings, list)
    status = {(x["network_transaction_id"], x["type"]): x["status"] for x in findings}
    assert status[(changed.network_transaction_id, "payment")] == "amount_mismatch"
    assert status[(dropped.network_transaction_id, "payment")] == "missing_in_file"
    assert status[("FFFFFFFFFFFF", "payment")] == "missing_in_ledger"
    assert status[(fee_changed.network_transaction_id, "payment")] == "fee_mismatch"
    others = [
        s
        for k, s in status.items()
        if k[0]
        not in {
            changed.network_transaction_id,
            dropped.network_transaction_id,
            "FFFFFFFFFFFF",
            fee_changed.network_transaction_id,
        }
    ]
    assert others and set(others) == {"matched"}
    text = capsys.readouterr().out
    for word in ("amount_mismatch", "missing_in_file", "missing_in_ledger", "fee_mismatch"):
        assert word in text
    _ = p


def _t(r: SettlementRow) -> tuple[object, ...]:
    return (r.batch_id, r.merchant_id, r.network_transaction_id, r.merchant_reference, r.type)


def test_closing_an_empty_batch(card_psp: LivePsp) -> None:
    t = Till(card_psp, card_psp.create_merchant())
    try:
        b = t.close_batch()
        assert b.count == 0 and b.gross.amount_minor == 0
    finally:
        t.close()


def test_dispute_evidence_then_the_network_decides(
    closed: tuple[Till, m.Batch, dict[str, c.Payment]],
    cardnet: CardnetProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The operator submits the merchant's evidence; the network (the simulator) decides
    and the PSP books its decision: won, the merchant gets the money back."""
    t, _, p = closed
    db = ["--data", str(tmp_path), "--db", t.psp.db_url, "--json"]
    capsys.readouterr()
    assert main(["admin", "dispute", "list", "--merchant", t.creds.merchant_id, *db]) == 0
    listed = json.loads(capsys.readouterr().out)["disputes"]
    assert [d["payment_id"] for d in listed] == [p["disputed"].id]
    assert listed[0]["status"] == "open" and listed[0]["reason_code"] == "FR01"
    dsp = listed[0]["id"]
    before = t.balances()["merchant"]
    evidence = "signed receipt and delivery note for order A-4, customer present"
    argv = ["admin", "dispute", "evidence", dsp, "--text", evidence, "--cardnet", cardnet.address]
    assert main([*argv, *db]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "won"
    assert main(["admin", "dispute", "accept", dsp, *db]) == 1  # no longer open
    assert json.loads(capsys.readouterr().out)["reason"] == "DISPUTE_NOT_OPEN"
    got = t.stub.GetPayment(m.GetPaymentRequest(payment_id=p["disputed"].id), metadata=t.md)
    assert got.status == c.PAYMENT_STATUS_SUCCEEDED
    assert t.balances()["merchant"] == before + 4000
    assert t.psp.app.admin.ledger_check() == []
