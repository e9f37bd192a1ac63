"""Operator actions (the `scanpay admin` commands): synchronous, on the same database."""

from __future__ import annotations

from dataclasses import dataclass

from psp_server.adapters.store import SqlStore
from psp_server.domain import fx, ids, limits, qr
from psp_server.domain.errors import Conflict, NotFound, ValidationError
from psp_server.domain.money import Money, is_currency
from psp_server.domain.parties import Consumer, Merchant, StaticQr, Terminal
from psp_server.service import auth
from psp_server.service.common import Deps, check_text, money
from psp_server.service.merchant import MerchantServices, pay_url, static_payload
from psp_server.service.wallet import WalletServices, check_password, normalize_email


@dataclass(frozen=True, slots=True)
class NewTerminal:
    terminal: Terminal
    api_key: str  # shown once


class AdminServices:
    def __init__(self, deps: Deps, merchants: MerchantServices, wallets: WalletServices) -> None:
        self.d = deps
        self.m = merchants
        self.w = wallets

    def create_merchant(
        self,
        *,
        name: str,
        city: str,
        country: str,
        currency: str,
        mcc: str,
        discount_rate_bps: int | None = None,
    ) -> Merchant:
        check_text(name, "name", max_len=100, required=True)
        check_text(city, "city", max_len=60, required=True)
        if len(country) != 2 or not country.isalpha():
            raise ValidationError("country is an ISO 3166 alpha-2 code", reason="INVALID_COUNTRY")
        if not is_currency(currency):
            raise ValidationError(f"unknown currency {currency!r}", reason="UNKNOWN_CURRENCY")
        if len(mcc) != 4 or not mcc.isdigit():
            raise ValidationError("mcc is 4 digits", reason="INVALID_MCC")
        bps = (
            self.d.settings.default_discount_bps if discount_rate_bps is None else discount_rate_bps
        )
        if not 0 <= bps <= 2000:
            raise ValidationError("discount rate must be 0..2000 bps", reason="INVALID_RATE")

        def job(store: SqlStore) -> Merchant:
            now = self.d.clock.now()
            m = Merchant(
                id=ids.new_id("mer"),
                code=ids.new_token(8),
                name=name.strip(),
                city=city.strip(),
                country=country.upper(),
                currency=currency,
                mcc=mcc,
                discount_rate_bps=bps,
                created_at=now,
            )
            # Fail now, not at the first sale, if the name cannot make a QR code.
            try:
                qr.encode_scanpay(
                    dynamic=False,
                    merchant_code=m.code,
                    token=ids.new_token(20),
                    mcc=m.mcc,
                    amount=None,
                    currency=m.currency,
                    country=m.country,
                    name=m.name,
                    city=m.city,
                )
            except qr.QrError as exc:
                raise ValidationError(str(exc), reason=exc.reason) from None
            store.insert_merchant(m)
            store.insert_static_qr(StaticQr(ids.new_token(20), m.id, None), now)
            return m

        return self.d.db.write_sync(job)

    def create_terminal(self, merchant_id: str, label: str) -> NewTerminal:
        check_text(label, "label", max_len=40, required=True)

        def job(store: SqlStore) -> NewTerminal:
            now = self.d.clock.now()
            if store.get_merchant(merchant_id) is None:
                raise NotFound(f"merchant {merchant_id} not found", reason="MERCHANT_NOT_FOUND")
            key, prefix, key_hash = auth.new_api_key()
            term = Terminal(
                id=ids.new_id("trm"),
                merchant_id=merchant_id,
                label=label.strip(),
                key_prefix=prefix,
                key_hash=key_hash,
                created_at=now,
            )
            store.insert_terminal(term)
            store.insert_static_qr(StaticQr(ids.new_token(20), merchant_id, term.id), now)
            return NewTerminal(term, key)

        return self.d.db.write_sync(job)

    def create_consumer(
        self,
        *,
        email: str,
        password: str,
        currency: str,
        kyc_tier: int = 1,
        display_name: str = "",
    ) -> Consumer:
        e = normalize_email(email)
        check_password(password)
        limits.tier(kyc_tier)
        if not is_currency(currency):
            raise ValidationError(f"unknown currency {currency!r}", reason="UNKNOWN_CURRENCY")
        pw_hash = auth.hash_password(password)

        def job(store: SqlStore) -> Consumer:
            now = self.d.clock.now()
            if store.get_consumer_by_email(e) is not None:
                raise Conflict("an account with this e-mail exists", reason="EMAIL_TAKEN")
            c = Consumer(
                id=ids.new_id("con"),
                email=e,
                display_name=display_name or e.split("@")[0],
                password_hash=pw_hash,
                currency=currency,
                kyc_tier=kyc_tier,
                failed_logins=0,
                locked_until=None,
                created_at=now,
            )
            store.insert_consumer(c)
            return c

        return self.d.db.write_sync(job)

    def find_consumer(self, id_or_email: str) -> Consumer:
        def q(store: SqlStore) -> Consumer:
            c = (
                store.get_consumer(id_or_email)
                if id_or_email.startswith("con_")
                else store.get_consumer_by_email(id_or_email.strip().lower())
            )
            if c is None:
                raise NotFound(f"no consumer {id_or_email}", reason="CONSUMER_NOT_FOUND")
            return c

        return self.d.db.read_sync(q)

    def top_up(self, id_or_email: str, amount_minor: int, currency: str) -> Money:
        amount = money(amount_minor, currency)
        c = self.find_consumer(id_or_email)

        def job(store: SqlStore) -> Money:
            self.w.top_up_in(store, c, amount, "top-up by operator")
            from psp_server.domain import ledger

            return Money(store.balance(ledger.wallet(c.id, c.currency)), c.currency)

        return self.d.db.write_sync(job)

    def set_kyc_tier(self, id_or_email: str, tier: int) -> Consumer:
        limits.tier(tier)
        c = self.find_consumer(id_or_email)
        self.d.db.write_sync(lambda s: s.set_consumer_tier(c.id, tier))
        return self.find_consumer(c.id)

    def set_fx_rate(self, base: str, quote: str, rate: str) -> str:
        for code in (base, quote):
            if not is_currency(code):
                raise ValidationError(f"unknown currency {code!r}", reason="UNKNOWN_CURRENCY")
        if base == quote:
            raise ValidationError("base and quote must differ", reason="INVALID_RATE")
        value = fx.format_rate(fx.parse_rate(rate), 10)
        self.d.db.write_sync(lambda s: s.set_rate(base, quote, value, self.d.clock.now()))
        return value

    def static_qr(
        self, merchant_id: str, terminal_id: str | None = None
    ) -> tuple[Merchant, str, str]:
        """(merchant, payload, pay url) of the merchant's (or a till's) static QR."""

        def q(store: SqlStore) -> tuple[Merchant, str, str]:
            m = store.get_merchant(merchant_id)
            if m is None:
                raise NotFound(f"merchant {merchant_id} not found", reason="MERCHANT_NOT_FOUND")
            sq = store.get_static_qr_for(m.id, terminal_id)
            if sq is None:
                raise NotFound("no static QR", reason="STATIC_QR_NOT_FOUND")
            label = ""
            if terminal_id:
                term = store.get_terminal(terminal_id)
                label = term.label if term else ""
            return (
                m,
                static_payload(m, sq.token, label),
                pay_url(self.d.settings.public_base_url, sq.token),
            )

        return self.d.db.read_sync(q)

    def ledger_check(self) -> list[str]:
        # One snapshot: a payment committing between the check's statements would otherwise
        # look like a balance that disagrees with its postings.
        return self.d.db.read_sync(lambda s: s.ledger_check(), snapshot=True)

    def list_merchants(self) -> list[Merchant]:
        return self.d.db.read_sync(lambda s: s.list_merchants())
