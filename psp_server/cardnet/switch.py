"""The network switch: one ISO 8583 request in, at most one response out.

Runs synchronously on one thread (the server hands every request to the same worker), so
requests are processed one at a time in arrival order. Each request is idempotent on
``(MTI, acquirer, terminal, STAN, transmission time)``: a retransmission gets the stored
answer (or, for the no-answer card, again no answer); the same key with a different
request is answered ``94`` (duplicate transmission) and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from psp_server.cardnet import spec
from psp_server.cardnet.issuers import (
    MIN_EVIDENCE_CHARS,
    Behaviour,
    Funding,
    account_for,
    decide_debit,
    decide_representment,
    route,
)
from psp_server.cardnet.settlement import (
    CHARGEBACK_REASON,
    Cleared,
    clear,
    render_csv,
    reversal_row,
    write_atomically,
)
from psp_server.cardnet.spec import Message, MessageFormatError, OriginalData
from psp_server.cardnet.store import Batch, Representment, Store, Txn, ts
from psp_server.domain.cards import is_expired, response_code
from psp_server.domain.money import currency_from_numeric, numeric_code

log = logging.getLogger("scanpay.cardnet")

DEFAULT_HOLD_TTL = timedelta(days=7)
SETTLEMENT_DIR = "settlement"

# Fields copied from a request into its response.
_ECHO = ("2", "3", "4", "7", "11", "32", "41", "42", "49", "70", "90")
_REQUIRED: dict[str, tuple[str, ...]] = {
    spec.AUTH_REQUEST: ("3", "4", "7", "11", "32", "41", "42", "49"),
    spec.FINANCIAL_REQUEST: ("3", "4", "7", "11", "32", "41", "42", "49"),
    spec.ADVICE_REQUEST: ("4", "7", "11", "32", "41", "42", "90"),
    spec.REVERSAL_REQUEST: ("7", "11", "32", "41", "42", "90"),
    spec.BATCH_REQUEST: ("7", "11", "32", "42"),
    spec.REPRESENTMENT_REQUEST: ("4", "7", "11", "32", "42", "49", "56"),
    spec.NETWORK_REQUEST: ("7", "11", "70"),
}


def normalize_acquirer(acquirer_id: str) -> str:
    return acquirer_id.lstrip("0") or "0"


def request_key(mti: str, acquirer_id: str, terminal_id: str, stan: str, transmission: str) -> str:
    return f"{mti}|{normalize_acquirer(acquirer_id)}|{terminal_id}|{stan}|{transmission}"


def settlement_path(data_dir: Path, batch_id: str) -> Path:
    return data_dir / SETTLEMENT_DIR / f"{batch_id}.csv"


@dataclass(slots=True)
class _Outcome:
    response: Message
    answered: bool = True


class Switch:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] | None = None,
        hold_ttl: timedelta = DEFAULT_HOLD_TTL,
    ) -> None:
        self.store = store
        self.data_dir = store.data_dir
        self._clock = clock or (lambda: datetime.now(UTC))
        self.hold_ttl = hold_ttl

    # --- entry point ------------------------------------------------------------------------

    def handle(self, msg: Message) -> Message | None:
        mti = msg.get("t", "")
        if mti not in spec.REQUEST_MTIS:
            log.warning("ignoring a message of type %s", mti)
            return None
        missing = [f for f in _REQUIRED[mti] if f not in msg]
        if missing:
            return self._reply(msg, "30", f"missing fields {','.join(missing)}")
        if mti == spec.NETWORK_REQUEST:
            if msg["70"] != spec.NMI_ECHO:
                return self._reply(msg, "12", "unsupported network management code")
            return self._reply(msg, "00", "echo")
        now = self._clock()
        key = request_key(mti, msg["32"], msg.get("41", ""), msg["11"], msg["7"])
        digest = hashlib.sha256(json.dumps(msg, sort_keys=True).encode()).hexdigest()
        written: list[str] = []
        try:
            with self.store.transaction():
                prior = self.store.get_request(key)
                if prior is not None:
                    if prior.request_hash != digest:
                        return self._reply(msg, "94", "STAN already used for another request")
                    if prior.response is None:
                        return None
                    stored_response: Message = json.loads(prior.response)
                    return stored_response
                outcome = self._dispatch(mti, msg, key, now, written)
                stored = json.dumps(outcome.response) if outcome.answered else None
                self.store.put_request(key, digest, stored, now)
        except MessageFormatError as exc:  # rolled back: a format error changes nothing
            return self._reply(msg, "30", str(exc))
        for batch_id in written:  # after the commit: rebuilt at start-up if we die here
            self.write_settlement_file(batch_id)
        return outcome.response if outcome.answered else None

    def _dispatch(
        self, mti: str, msg: Message, key: str, now: datetime, written: list[str]
    ) -> _Outcome:
        if mti == spec.AUTH_REQUEST:
            return self._debit(msg, key, now, kind="auth")
        if mti == spec.FINANCIAL_REQUEST:
            if msg["3"][:2] == spec.PROC_REFUND[:2]:
                return self._refund(msg, key, now)
            return self._debit(msg, key, now, kind="sale")
        if mti == spec.ADVICE_REQUEST:
            return self._capture(msg, now)
        if mti == spec.REVERSAL_REQUEST:
            return self._reverse(msg, now)
        if mti == spec.REPRESENTMENT_REQUEST:
            return self._represent(msg, key, now)
        return self._close_batch(msg, now, written)

    # --- helpers ----------------------------------------------------------------------------

    def _reply(self, msg: Message, code: str, text: str | None = None, **extra: str) -> Message:
        out: Message = {"t": spec.response_mti(msg["t"])}
        for f in _ECHO:
            if f in msg:
                out[f] = msg[f]
        out["39"] = code
        out["44"] = (text or response_code(code).text)[:99]
        out.update(extra)
        if "2" in out:  # never echo a full card number
            del out["2"]
        return out

    @staticmethod
    def _card(msg: Message) -> tuple[str, str | None]:
        """PAN and expiry (YYMM) from field 35, else fields 2 and 14."""
        pan = msg.get("2")
        expiry = msg.get("14")
        if "35" in msg:
            t2 = msg["35"].replace("D", "=")
            t2_pan, sep, rest = t2.partition("=")
            if not sep or len(rest) < 4:
                raise MessageFormatError("track 2 without separator or expiry", "35")
            if pan is not None and pan != t2_pan:
                raise MessageFormatError("PAN differs from track 2", "2")
            pan, expiry = t2_pan, rest[:4]
        if pan is None:
            raise MessageFormatError("no card number", "2")
        return pan, expiry

    @staticmethod
    def _currency(msg: Message) -> str:
        currency = currency_from_numeric(msg["49"])
        if currency is None:
            raise MessageFormatError("unknown currency", "49")
        return currency

    def _new_txn(
        self,
        msg: Message,
        key: str,
        now: datetime,
        *,
        kind: str,
        pan: str,
        issuer_id: str,
        funding: str,
        currency: str,
        code: str,
        status: str,
        original_ntid: str | None = None,
    ) -> Txn:
        amount = int(msg["4"])
        txn = Txn(
            ntid=secrets.token_hex(6).upper(),
            kind=kind,
            request_key=key,
            acquirer_id=normalize_acquirer(msg["32"]),
            merchant_id=msg["42"],
            terminal_id=msg["41"],
            pan=pan,
            issuer_id=issuer_id,
            funding=funding,
            amount_minor=amount,
            currency=currency,
            merchant_reference=msg.get("48", ""),
            response_code=code,
            auth_code=f"{secrets.randbelow(10**6):06d}" if code == "00" else None,
            status=status,
            captured_minor=amount if status == "captured" else None,
            original_ntid=original_ntid,
            created_at=ts(now),
            hold_expires_at=ts(now + self.hold_ttl) if status == "held" else None,
            batch_id=None,
            disputed=0,
        )
        self.store.insert_txn(txn)
        return txn

    def _txn_reply(self, msg: Message, txn: Txn, text: str | None = None) -> Message:
        extra = {"37": txn.ntid}
        if txn.auth_code:
            extra["38"] = txn.auth_code
        return self._reply(msg, txn.response_code, text, **extra)

    # --- 0100 / 0200 purchase ---------------------------------------------------------------

    def _debit(self, msg: Message, key: str, now: datetime, *, kind: str) -> _Outcome:
        pan, expiry = self._card(msg)
        currency = self._currency(msg)
        issuer = route(pan)
        if issuer is None:
            return _Outcome(self._reply(msg, "15"))
        account = account_for(pan)
        if account is None:
            return _Outcome(self._reply(msg, "14"))
        if self.store.has_tombstone(key):
            return _Outcome(self._reply(msg, "12", "reversed before it arrived; nothing held"))
        amount = int(msg["4"])
        try:
            expired = expiry is not None and is_expired(expiry, now)
        except ValueError:
            raise MessageFormatError("bad expiry date", "14") from None
        available = account.limit_minor - self.store.used_minor(pan, currency, now)
        code = decide_debit(account, amount, available, card_expired=expired)
        status = "declined" if code != "00" else ("held" if kind == "auth" else "captured")
        txn = self._new_txn(
            msg,
            key,
            now,
            kind=kind,
            pan=pan,
            issuer_id=issuer.issuer_id,
            funding=account.funding.value,
            currency=currency,
            code=code,
            status=status,
        )
        answered = account.behaviour is not Behaviour.NO_ANSWER
        return _Outcome(self._txn_reply(msg, txn), answered)

    # --- 0200 refund ------------------------------------------------------------------------

    def _refund(self, msg: Message, key: str, now: datetime) -> _Outcome:
        currency = self._currency(msg)
        amount = int(msg["4"])
        original: Txn | None = None
        if "56" in msg:
            original = self.store.txn_by_ntid(msg["56"])
            if (
                original is None
                or original.kind == "refund"
                or original.merchant_id != msg["42"]
                or original.acquirer_id != normalize_acquirer(msg["32"])
            ):
                return _Outcome(self._reply(msg, "25", "original payment not found"))
            if original.status not in ("captured", "settled"):
                return _Outcome(self._reply(msg, "12", "original payment was not captured"))
            if original.currency != currency:
                return _Outcome(self._reply(msg, "13", "currency differs from the payment"))
            captured = original.captured_minor or 0
            if amount > captured - self.store.refunded_minor(original.ntid):
                return _Outcome(self._reply(msg, "13", "refunds would exceed the payment"))
        if "2" in msg or "35" in msg:
            pan, _ = self._card(msg)
            if original is not None and pan != original.pan:
                return _Outcome(self._reply(msg, "12", "card differs from the payment's"))
        elif original is not None:
            pan = original.pan
        else:
            raise MessageFormatError("refund without card or original", "56")
        issuer = route(pan)
        if issuer is None:
            return _Outcome(self._reply(msg, "15"))
        account = account_for(pan)
        if account is None:
            return _Outcome(self._reply(msg, "14"))
        if self.store.has_tombstone(key):
            return _Outcome(self._reply(msg, "12", "reversed before it arrived"))
        code = "00" if amount > 0 else "13"
        txn = self._new_txn(
            msg,
            key,
            now,
            kind="refund",
            pan=pan,
            issuer_id=issuer.issuer_id,
            funding=account.funding.value,
            currency=currency,
            code=code,
            status="captured" if code == "00" else "declined",
            original_ntid=original.ntid if original else None,
        )
        answered = account.behaviour is not Behaviour.NO_ANSWER
        return _Outcome(self._txn_reply(msg, txn), answered)

    # --- 0220 capture advice ----------------------------------------------------------------

    def _original(self, msg: Message) -> tuple[str, Txn | None]:
        orig = OriginalData.parse(msg["90"])
        okey = request_key(orig.mti, orig.acquirer_id, msg["41"], orig.stan, orig.transmission)
        txn = self.store.txn_by_key(okey)
        if txn is not None and (
            txn.merchant_id != msg["42"] or txn.acquirer_id != normalize_acquirer(msg["32"])
        ):
            txn = None
        return okey, txn

    def _capture(self, msg: Message, now: datetime) -> _Outcome:
        _, txn = self._original(msg)
        if txn is None:
            return _Outcome(self._reply(msg, "25"))
        ref = {"37": txn.ntid}
        if txn.kind != "auth":
            return _Outcome(self._reply(msg, "12", "only an authorization can be captured", **ref))
        if "49" in msg and currency_from_numeric(msg["49"]) != txn.currency:
            return _Outcome(self._reply(msg, "13", "currency differs", **ref))
        amount = int(msg["4"])
        if txn.status in ("captured", "settled"):
            if txn.captured_minor == amount:
                return _Outcome(self._reply(msg, "00", "already captured", **ref))
            return _Outcome(self._reply(msg, "12", "already captured another amount", **ref))
        if txn.status == "reversed":
            return _Outcome(self._reply(msg, "12", "authorization was reversed", **ref))
        if txn.status != "held":
            return _Outcome(self._reply(msg, "12", "authorization was declined", **ref))
        if txn.hold_expires_at is not None and txn.hold_expires_at <= ts(now):
            return _Outcome(self._reply(msg, "12", "authorization expired", **ref))
        if not 0 < amount <= txn.amount_minor:
            return _Outcome(self._reply(msg, "13", "capture exceeds the authorization", **ref))
        self.store.update_txn(txn.ntid, status="captured", captured_minor=amount)
        return _Outcome(self._reply(msg, "00", "captured", **ref))

    # --- 0400 reversal ----------------------------------------------------------------------

    def _reverse(self, msg: Message, now: datetime) -> _Outcome:
        okey, txn = self._original(msg)
        if txn is None:
            # Remember it, so that the original, should it arrive late, holds nothing.
            self.store.add_tombstone(okey, now)
            return _Outcome(self._reply(msg, "25", "original not found; nothing held"))
        ref = {"37": txn.ntid}
        if txn.status in ("held", "captured"):
            self.store.update_txn(txn.ntid, status="reversed")
            return _Outcome(self._reply(msg, "00", "reversed", **ref))
        if txn.status == "reversed":
            return _Outcome(self._reply(msg, "00", "already reversed", **ref))
        if txn.status == "declined":
            return _Outcome(self._reply(msg, "00", "original was declined; nothing held", **ref))
        return _Outcome(self._reply(msg, "12", "already settled; refund instead", **ref))

    # --- 0600 representment ----------------------------------------------------------------

    def _represent(self, msg: Message, key: str, now: datetime) -> _Outcome:
        """The merchant answers a chargeback with evidence (field 72); the issuer decides at
        once (:func:`~psp_server.cardnet.issuers.decide_representment`): ``00`` won, the
        chargeback is reversed (a ``chargeback_reversal`` row in the merchant's next batch);
        ``05`` lost, it stands. One decision per chargeback: a later representment of the
        same transaction gets that decision again and changes nothing."""
        currency = self._currency(msg)
        txn = self.store.txn_by_ntid(msg["56"])
        if (
            txn is None
            or txn.kind == "refund"
            or txn.merchant_id != msg["42"]
            or txn.acquirer_id != normalize_acquirer(msg["32"])
        ):
            return _Outcome(self._reply(msg, "25", "original payment not found"))
        ref = {"37": txn.ntid}
        prior = self.store.get_representment(txn.ntid)
        if prior is not None:
            code = "00" if prior.decision == "won" else "05"
            return _Outcome(self._reply(msg, code, f"already decided: {prior.decision}", **ref))
        if not txn.disputed:
            return _Outcome(self._reply(msg, "12", "transaction was not charged back", **ref))
        if currency != txn.currency or int(msg["4"]) != (txn.captured_minor or 0):
            return _Outcome(self._reply(msg, "13", "amount differs from the chargeback", **ref))
        evidence = msg.get("72", "")
        won = decide_representment(evidence)
        decision = "won" if won else "lost"
        self.store.insert_representment(
            Representment(txn.ntid, key, evidence, decision, ts(now), None)
        )
        if won:
            return _Outcome(self._reply(msg, "00", "representment won: chargeback reversed", **ref))
        text = f"representment lost: chargeback stands (evidence under {MIN_EVIDENCE_CHARS} chars)"
        return _Outcome(self._reply(msg, "05", text, **ref))

    # --- 0500 batch close -------------------------------------------------------------------

    def _close_batch(self, msg: Message, now: datetime, written: list[str]) -> _Outcome:
        acquirer, merchant = normalize_acquirer(msg["32"]), msg["42"]
        items = self.store.open_items(acquirer, merchant)
        debits = [t for t in items if t.kind != "refund"]
        credits = [t for t in items if t.kind == "refund"]
        totals = {
            "76": f"{len(debits):010d}",
            "88": spec.amount_field(sum(t.captured_minor or 0 for t in debits), 16),
            "74": f"{len(credits):010d}",
            "86": spec.amount_field(sum(t.amount_minor for t in credits), 16),
        }
        if any(f in msg and msg[f] != v for f, v in totals.items()):
            return _Outcome(self._reply(msg, "95", "totals differ; batch stays open", **totals))
        batch_id = f"{now:%Y%m%d}-{self.store.batch_count() + 1:06d}"
        settle_on = (now.astimezone(UTC).date() + timedelta(days=1)).isoformat()
        cleared = []
        for t in items:
            account = account_for(t.pan)
            disputed = (
                t.kind != "refund"
                and account is not None
                and account.behaviour is Behaviour.DISPUTE
            )
            cleared.append(
                Cleared(
                    network_transaction_id=t.ntid,
                    merchant_reference=t.merchant_reference,
                    kind="refund" if t.kind == "refund" else "payment",
                    amount_minor=(t.amount_minor if t.kind == "refund" else t.captured_minor or 0),
                    currency=t.currency,
                    funding=Funding(t.funding),
                    disputed=disputed,
                )
            )
            self.store.update_txn(
                t.ntid, status="settled", batch_id=batch_id, disputed=int(disputed)
            )
        rows = clear(cleared, batch_id=batch_id, merchant_id=merchant, settlement_date=settle_on)
        # Chargebacks reversed since the last close (representments won).
        reversals = 0
        for rep in self.store.unsettled_reversals(acquirer, merchant):
            cb = self.store.chargeback_row(rep.ntid)
            if cb is None:  # cannot happen: only a charged-back transaction is represented
                log.error("no chargeback row for the representment of %s", rep.ntid)
                continue
            rows.append(reversal_row(cb, batch_id=batch_id, settlement_date=settle_on))
            self.store.settle_reversal(rep.ntid, batch_id)
            reversals += 1
        self.store.insert_batch(Batch(batch_id, acquirer, merchant, ts(now), settle_on), rows)
        written.append(batch_id)
        chargebacks = [
            spec.ChargebackRecord(
                r.network_transaction_id, -r.gross, numeric_code(r.currency), CHARGEBACK_REASON
            )
            for r in rows
            if r.type == "chargeback"
        ]
        extra = dict(totals)
        extra["15"] = settle_on[5:7] + settle_on[8:10]
        extra["62"] = batch_id
        if chargebacks:
            extra["63"] = spec.encode_chargebacks(chargebacks[: spec.MAX_CHARGEBACKS_PER_MESSAGE])
        text = f"batch closed: {len(rows)} rows, {len(chargebacks)} chargebacks"
        if reversals:
            text += f", {reversals} reversed"
        return _Outcome(self._reply(msg, "00", text, **extra))

    # --- settlement files -------------------------------------------------------------------

    def write_settlement_file(self, batch_id: str) -> Path:
        path = settlement_path(self.data_dir, batch_id)
        write_atomically(path, render_csv(self.store.settlement_rows(batch_id)))
        return path

    def repair_settlement_files(self) -> list[str]:
        """Write the file of every closed batch that has none (after a crash mid-close)."""
        repaired = []
        for batch in self.store.batches():
            if not settlement_path(self.data_dir, batch.batch_id).exists():
                self.write_settlement_file(batch.batch_id)
                repaired.append(batch.batch_id)
        return repaired
