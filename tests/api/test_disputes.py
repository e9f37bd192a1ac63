"""Disputes decided by the card network: a chargeback (the disputed test card) becomes a
dispute; `scanpay admin dispute evidence` sends a representment (0600) to the real simulator
process, which decides (evidence of 20 non-blank characters or more wins); the PSP books the
decision once, and the reversal of a won chargeback reconciles in the next batch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from protos.scanpay.v1 import common_pb2 as c
from protos.scanpay.v1 import merchant_pb2 as m
from psp_server.__main__ import main
from psp_server.adapters.card_store import CardStore
from psp_server.adapters.cardnet_client import CardNetworkClient, Trace
from psp_server.cardnet.settlement import parse_csv
from psp_server.domain.money import Money
from tests.api.test_card_api import BACKENDS, Till, card_server
from tests.support.cardnet import CardnetProcess
from tests.support.psp import LivePsp

DISPUTED = "4000000000000259"
WINNING = "signed receipt and proof of delivery to the cardholder"
LOSING = "receipt"
AMOUNT = 4000
MARKUP = 40  # 1 %
CHARGEBACK_FEE = 1500


@pytest.fixture(scope="module", params=BACKENDS)
def card_psp(
    request: pytest.FixtureRequest,
    cardnet: CardnetProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LivePsp]:
    data = tmp_path_factory.mktemp(f"psp-disputes-{request.param}")
    with card_server(request, data, cardnet) as psp:
        yield psp


class Disputed:
    """A merchant whose disputed-card sale was charged back at its batch close."""

    def __init__(self, psp: LivePsp, sim: CardnetProcess, tmp: Path) -> None:
        self.t = Till(psp, psp.create_merchant(discount_rate_bps=100))
        self.sim = sim
        self.tmp = tmp
        self.payment = self.t.swipe(DISPUTED, AMOUNT, order_id="D-1")
        self.batch = self.t.close_batch()
        assert psp.app.cards is not None
        disputes = psp.app.cards.list_disputes(self.t.creds.merchant_id)
        assert [d.payment_id for d in disputes] == [self.payment.id]
        self.dispute = disputes[0]
        assert self.status() == c.PAYMENT_STATUS_DISPUTED

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
        capsys.readouterr()
        db = ["--data", str(self.tmp), "--db", self.t.psp.db_url, "--json"]
        code = main(["admin", "dispute", *argv, *db])
        return code, json.loads(capsys.readouterr().out)

    def evidence(
        self, capsys: pytest.CaptureFixture[str], text: str, cardnet: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        where = cardnet or self.sim.address
        return self.cli(capsys, "evidence", self.dispute.id, "--text", text, "--cardnet", where)

    def status(self) -> int:
        got = self.t.stub.GetPayment(
            m.GetPaymentRequest(payment_id=self.payment.id), metadata=self.t.md
        )
        return int(got.status)

    def balance(self) -> int:
        return self.t.balances()["merchant"]

    def my_events(self, count: int) -> list[str]:
        return [e for e, pid in self.t.events(count) if pid == self.payment.id]


@pytest.fixture
def disputed(card_psp: LivePsp, cardnet: CardnetProcess, tmp_path: Path) -> Iterator[Disputed]:
    d = Disputed(card_psp, cardnet, tmp_path)
    yield d
    d.t.close()


CHARGED_BACK = AMOUNT - MARKUP - AMOUNT - CHARGEBACK_FEE


def test_won_representment_end_to_end(
    disputed: Disputed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = disputed
    assert d.balance() == CHARGED_BACK
    code, out = d.evidence(capsys, WINNING)
    assert code == 0, out
    assert (out["status"], out["evidence"]) == ("won", WINNING)
    assert d.status() == c.PAYMENT_STATUS_SUCCEEDED
    assert d.balance() == CHARGED_BACK + AMOUNT  # the chargeback fee stays charged
    assert d.my_events(3) == [
        "PAYMENT_EVENT_TYPE_SUCCEEDED",
        "PAYMENT_EVENT_TYPE_DISPUTED",
        "PAYMENT_EVENT_TYPE_SUCCEEDED",
    ]
    assert d.t.psp.app.admin.ledger_check() == []

    # A retry with the same evidence answers the decision and books nothing more.
    code, out = d.evidence(capsys, WINNING)
    assert (code, out["status"]) == (0, "won")
    assert d.balance() == CHARGED_BACK + AMOUNT
    code, out = d.evidence(capsys, WINNING + " and more")
    assert (code, out["reason"]) == (1, "DISPUTE_NOT_OPEN")
    code, out = d.cli(capsys, "accept", d.dispute.id)
    assert (code, out["reason"]) == (1, "DISPUTE_NOT_OPEN")

    # The next batch carries the reversal; it books the interchange and reconciles.
    nxt = d.t.close_batch()
    rows = parse_csv(Path(nxt.settlement_file).read_text(encoding="utf-8"))
    ntid = d.dispute.network_transaction_id
    assert [(r.network_transaction_id, r.type, r.gross, r.interchange, r.net) for r in rows] == [
        (ntid, "chargeback_reversal", AMOUNT, 12, AMOUNT - 12)
    ]
    assert (nxt.count, nxt.gross.amount_minor, nxt.net.amount_minor) == (1, AMOUNT, AMOUNT - 12)
    assert d.balance() == CHARGED_BACK + AMOUNT
    assert d.t.psp.app.admin.ledger_check() == []
    for f in (d.batch.settlement_file, nxt.settlement_file):
        out_file = tmp_path / "report.json"
        argv = ["reconcile", "--file", f, "--out", str(out_file)]
        code = main([*argv, "--data", str(tmp_path), "--db", d.t.psp.db_url])
        report = json.loads(out_file.read_text(encoding="utf-8"))
        assert code == 0, report
        assert report["ok"] is True and report["counts"]["matched"] == len(
            parse_csv(Path(f).read_text(encoding="utf-8"))
        )


def test_lost_representment(disputed: Disputed, capsys: pytest.CaptureFixture[str]) -> None:
    d = disputed
    code, out = d.evidence(capsys, LOSING)
    assert code == 0, out
    assert out["status"] == "lost"
    assert d.status() == c.PAYMENT_STATUS_REFUNDED
    assert d.balance() == CHARGED_BACK
    assert d.my_events(3) == [
        "PAYMENT_EVENT_TYPE_SUCCEEDED",
        "PAYMENT_EVENT_TYPE_DISPUTED",
        "PAYMENT_EVENT_TYPE_REFUNDED",
    ]
    code, out = d.evidence(capsys, LOSING)  # retry: the same decision, nothing booked
    assert (code, out["status"]) == (0, "lost")
    code, out = d.cli(capsys, "decide", d.dispute.id, "won")  # the override: only pending
    assert (code, out["reason"]) == (1, "DISPUTE_NOT_OPEN")
    assert d.balance() == CHARGED_BACK
    nxt = d.t.close_batch()
    assert nxt.count == 0  # nothing reversed
    assert d.t.psp.app.admin.ledger_check() == []


def test_network_down_nothing_booked_then_retry(
    disputed: Disputed, capsys: pytest.CaptureFixture[str]
) -> None:
    d = disputed
    code, out = d.evidence(capsys, WINNING, cardnet="127.0.0.1:1")  # nothing listens
    assert (code, out["reason"]) == (1, "CARD_NETWORK_UNAVAILABLE")
    [row] = [x for x in d.cli(capsys, "list", "--merchant", d.t.creds.merchant_id)[1]["disputes"]]
    assert (row["status"], row["evidence"]) == ("open", "")
    assert d.status() == c.PAYMENT_STATUS_DISPUTED
    assert d.balance() == CHARGED_BACK
    code, out = d.evidence(capsys, WINNING)
    assert (code, out["status"]) == (0, "won")
    assert d.balance() == CHARGED_BACK + AMOUNT
    assert d.t.psp.app.admin.ledger_check() == []


def test_answer_lost_retry_books_the_network_decision_once(
    disputed: Disputed, capsys: pytest.CaptureFixture[str]
) -> None:
    """The PSP recorded the representment (job 1) and the network decided, but the answer
    never got booked: a retry re-sends the same message and books the decision once."""
    d = disputed
    trace = Trace("424242", datetime.now(UTC).replace(microsecond=0))
    d.t.psp.app.db.write_sync(
        lambda s: CardStore(s).update_dispute(
            d.dispute.id,
            status="evidence_submitted",
            evidence=WINNING,
            represent_stan=trace.stan,
            represent_transmitted_at=trace.transmitted_at,
        )
    )

    async def send() -> str | None:
        host, port = d.sim.address.rsplit(":", 1)
        async with CardNetworkClient(host, int(port), timeout=5.0, acquirer_id="123456") as cl:
            res = await cl.represent(
                d.dispute.network_transaction_id,
                Money(AMOUNT, "EUR"),
                merchant_id=d.t.creds.merchant_id,
                evidence=WINNING,
                trace=trace,
            )
            return res.decision

    assert asyncio.run(send()) == "won"
    assert d.status() == c.PAYMENT_STATUS_DISPUTED  # decided, not booked
    assert d.balance() == CHARGED_BACK
    for _ in range(2):
        code, out = d.evidence(capsys, WINNING)
        assert (code, out["status"]) == (0, "won")
        assert d.balance() == CHARGED_BACK + AMOUNT
    assert d.status() == c.PAYMENT_STATUS_SUCCEEDED
    assert d.t.psp.app.admin.ledger_check() == []


def test_evidence_without_a_network(
    disputed: Disputed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCANPAY_CARDNET", raising=False)
    capsys.readouterr()
    db = ["--data", str(disputed.tmp), "--db", disputed.t.psp.db_url, "--json"]
    code = main(["admin", "dispute", "evidence", disputed.dispute.id, "--text", WINNING, *db])
    assert (code, json.loads(capsys.readouterr().out)["reason"]) == (1, "CARD_RAIL_UNAVAILABLE")
    assert disputed.status() == c.PAYMENT_STATUS_DISPUTED
