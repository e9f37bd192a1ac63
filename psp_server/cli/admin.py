"""`scanpay admin ...`: merchants, terminals, consumers, funds, FX rates, static QR,
card disputes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from psp_server.cli.common import USER_ERRORS, add_db_args, emit, fail, settings_from
from psp_server.domain.money import Money, MoneyError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("admin", help="operator commands")
    asub = p.add_subparsers(dest="admin_command", required=True, metavar="WHAT")

    mer = asub.add_parser("merchant", help="merchants").add_subparsers(dest="op", required=True)
    mc = mer.add_parser("create", help="register a merchant")
    mc.add_argument("--name", required=True)
    mc.add_argument("--city", required=True)
    mc.add_argument("--country", required=True, help="ISO 3166 alpha-2, like DE")
    mc.add_argument("--currency", required=True, help="ISO 4217, like EUR")
    mc.add_argument("--mcc", required=True, help="merchant category code, 4 digits")
    mc.add_argument(
        "--discount-bps", type=int, default=None, help="fee in basis points (100 = 1%%)"
    )
    mc.set_defaults(func=_merchant_create)
    ml = mer.add_parser("list", help="list merchants")
    ml.set_defaults(func=_merchant_list)

    term = asub.add_parser("terminal", help="terminals (tills)").add_subparsers(
        dest="op", required=True
    )
    tc = term.add_parser("create", help="create a till and print its API key once")
    tc.add_argument("--merchant", required=True)
    tc.add_argument("--label", required=True)
    tc.set_defaults(func=_terminal_create)

    con = asub.add_parser("consumer", help="consumers").add_subparsers(dest="op", required=True)
    cc = con.add_parser("create", help="create a consumer wallet")
    cc.add_argument("--email", required=True)
    cc.add_argument("--password", required=True)
    cc.add_argument("--currency", required=True)
    cc.add_argument("--kyc-tier", type=int, default=1)
    cc.add_argument("--name", default="")
    cc.set_defaults(func=_consumer_create)
    ck = con.add_parser("kyc", help="set a consumer's KYC tier")
    ck.add_argument("consumer", help="id or e-mail")
    ck.add_argument("tier", type=int)
    ck.set_defaults(func=_consumer_kyc)

    tu = asub.add_parser("topup", help="fund a consumer wallet (simulated bank transfer)")
    tu.add_argument("--consumer", required=True, help="id or e-mail")
    tu.add_argument("--amount", required=True, help="major units, like 25.00")
    tu.add_argument("--currency", default="")
    tu.set_defaults(func=_topup)

    fx = asub.add_parser("fx", help="exchange rates").add_subparsers(dest="op", required=True)
    fs = fx.add_parser("set", help="1 BASE = RATE QUOTE")
    fs.add_argument("base")
    fs.add_argument("quote")
    fs.add_argument("rate")
    fs.set_defaults(func=_fx_set)

    sq = asub.add_parser("static-qr", help="write a printable static-QR sticker")
    sq.add_argument("--merchant", required=True)
    sq.add_argument("--terminal", default=None, help="a till's own static QR")
    sq.add_argument("--out", required=True, type=Path, help="FILE.png or FILE.pdf")
    sq.set_defaults(func=_static_qr)

    lc = asub.add_parser("ledger-check", help="verify the ledger: balanced, balances derived")
    lc.set_defaults(func=_ledger_check)

    dsp = asub.add_parser("dispute", help="card chargebacks").add_subparsers(
        dest="op", required=True
    )
    dl = dsp.add_parser("list", help="list disputes")
    dl.add_argument("--merchant", default=None)
    dl.set_defaults(func=_dispute_list)
    da = dsp.add_parser("accept", help="the merchant accepts the chargeback")
    da.add_argument("dispute")
    da.set_defaults(func=_dispute_accept)
    de = dsp.add_parser(
        "evidence", help="send the merchant's evidence to the card network, which decides"
    )
    de.add_argument("dispute")
    de.add_argument("--text", required=True)
    de.add_argument(
        "--cardnet", default="", help="card network HOST:PORT (default: $SCANPAY_CARDNET)"
    )
    de.add_argument("--timeout", type=float, default=None, help="seconds per attempt")
    de.set_defaults(func=_dispute_evidence)
    dd = dsp.add_parser(
        "decide", help="operator override: record a decision taken outside the network"
    )
    dd.add_argument("dispute")
    dd.add_argument("outcome", choices=["won", "lost"])
    dd.set_defaults(func=_dispute_decide)

    for parser in (mc, ml, tc, cc, ck, tu, fs, sq, lc, dl, da, de, dd):
        add_db_args(parser)
        parser.add_argument("--json", action="store_true", help="print JSON")


def _app(args: argparse.Namespace) -> Any:
    from psp_server.bootstrap import build_app

    return build_app(settings_from(args))


def _run(args: argparse.Namespace, body: Any) -> int:
    app = _app(args)
    try:
        return int(body(app))
    except USER_ERRORS as exc:
        return fail(exc, args.json)
    finally:
        app.close()


def _merchant_create(args: argparse.Namespace) -> int:
    def body(app: Any) -> int:
        m = app.admin.create_merchant(
            name=args.name,
            city=args.city,
            country=args.country,
            currency=args.currency.upper(),
            mcc=args.mcc,
            discount_rate_bps=args.discount_bps,
        )
        emit(
            {
                "id": m.id,
                "code": m.code,
                "name": m.name,
                "city": m.city,
                "country": m.country,
                "currency": m.currency,
                "mcc": m.mcc,
                "discount_rate_bps": m.discount_rate_bps,
            },
            args.json,
            f"merchant {m.id} created: {m.name}, {m.city} "
            f"({m.currency}, fee {m.discount_rate_bps} bps)",
        )
        return 0

    return _run(args, body)


def _merchant_list(args: argparse.Namespace) -> int:
    def body(app: Any) -> int:
        for m in app.admin.list_merchants():
            emit(
                {"id": m.id, "name": m.name, "currency": m.currency},
                args.json,
                f"{m.id}  {m.name}  {m.currency}",
            )
        return 0

    return _run(args, body)


def _terminal_create(args: argparse.Namespace) -> int:
    def body(app: Any) -> int:
        t = app.admin.create_terminal(args.merchant, args.label)
        emit(
            {
                "id": t.terminal.id,
                "merchant_id": t.terminal.merchant_id,
                "label": t.terminal.label,
                "api_key": t.api_key,
            },
            args.json,
            f"terminal {t.terminal.id} ({t.terminal.label}) created.\n"
            f"API key (shown once, store it now): {t.api_key}",
        )
        return 0

    return _run(args, body)


def _consumer_create(args: argparse.Namespace) -> int:
    def body(app: Any) -> int:
        c = app.admin.create_consumer(
            email=args.email,
            password=args.password,
            currency=args.currency.upper(),
            kyc_tier=args.kyc_tier,
            display_name=args.name,
        )
        emit(
            {"id": c.id, "email": c.email, "currency": c.currency, "kyc_tier": c.kyc_tier},
            args.json,
            f"consumer {c.id} created: {c.email} ({c.currency}, KYC tier {c.kyc_tier})",
        )
        return 0

    return _run(args, body)


def _consumer_kyc(args: argparse.Namespace) -> int:
    def body(app: Any) -> int:
        c = app.admin.set_kyc_tier(args.consumer, args.tier)
        emit(
            {"id": c.id, "kyc_tier": c.kyc_tier},
            args.json,
            f"{c.email} is now KYC tier {c.kyc_tier}",
        )
        return 0

    return _run(args, body)


def _topup(args: argparse.Namespace) -> int:
    def body(app: Any) -> int:
        c = app.admin.find_consumer(args.consumer)
        currency = (args.currency or c.currency).upper()
        try:
            amount = Money.parse(args.amount, currency)
        except MoneyError as exc:
            return fail(exc, args.json)
        bal = app.admin.top_up(c.id, amount.amount_minor, currency)
        emit(
            {
                "consumer_id": c.id,
                "amount_minor": amount.amount_minor,
                "currency": currency,
                "balance_minor": bal.amount_minor,
            },
            args.json,
            f"topped up {amount} for {c.email}; balance {bal}",
        )
        return 0

    return _run(args, body)


def _fx_set(args: argparse.Namespace) -> int:
    def body(app: Any) -> int:
        base, quote = args.base.upper(), args.quote.upper()
        rate = app.admin.set_fx_rate(base, quote, args.rate)
        emit({"base": base, "quote": quote, "rate": rate}, args.json, f"1 {base} = {rate} {quote}")
        return 0

    return _run(args, body)


def _static_qr(args: argparse.Namespace) -> int:
    from psp_server.adapters import sticker

    def body(app: Any) -> int:
        m, payload, url = app.admin.static_qr(args.merchant, args.terminal)
        if args.out.suffix.lower() not in (".png", ".pdf"):
            print("error: --out must end in .png or .pdf")
            return 2
        sticker.render(payload, m.name, f"{m.city} · {m.id}", args.out)
        emit(
            {"merchant_id": m.id, "payload": payload, "pay_url": url, "file": str(args.out)},
            args.json,
            f"wrote {args.out} for {m.name}\npayload: {payload}",
        )
        return 0

    return _run(args, body)


def _ledger_check(args: argparse.Namespace) -> int:
    def body(app: Any) -> int:
        problems = app.admin.ledger_check()
        emit(
            {"ok": not problems, "problems": problems},
            args.json,
            "\n".join(problems) or "ledger OK: every entry balanced, every balance derived",
        )
        return 1 if problems else 0

    return _run(args, body)


def _disputes(app: Any) -> Any:
    from psp_server.service.cards import DisputeServices

    return DisputeServices(app.deps, app.merchants)


def _dispute_json(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "payment_id": d.payment_id,
        "merchant_id": d.merchant_id,
        "network_transaction_id": d.network_transaction_id,
        "amount_minor": d.amount.amount_minor,
        "currency": d.amount.currency,
        "reason_code": d.reason_code,
        "status": d.status,
        "evidence": d.evidence,
    }


def _dispute_line(d: Any) -> str:
    return f"{d.id}  {d.payment_id}  {d.amount}  {d.reason_code}  {d.status}"


def _dispute_list(args: argparse.Namespace) -> int:
    def body(app: Any) -> int:
        rows = _disputes(app).list(args.merchant)
        emit(
            {"disputes": [_dispute_json(d) for d in rows]},
            args.json,
            "\n".join(_dispute_line(d) for d in rows) or "no disputes",
        )
        return 0

    return _run(args, body)


def _dispute_accept(args: argparse.Namespace) -> int:
    def body(app: Any) -> int:
        d = _disputes(app).accept(args.dispute)
        emit(_dispute_json(d), args.json, _dispute_line(d))
        return 0

    return _run(args, body)


def _dispute_evidence(args: argparse.Namespace) -> int:
    """Sends a representment (0600) through a client of its own (no start-up recovery or
    reversal queue: those belong to the PSP process) and books the network's decision."""
    import asyncio

    from psp_server.adapters.cardnet_client import CardNetworkClient
    from psp_server.cli.cardnet import parse_listen
    from psp_server.domain.errors import Unavailable, ValidationError
    from psp_server.service.cards import CARD_RAIL_UNAVAILABLE, DisputeServices

    def body(app: Any) -> int:
        s = app.settings
        where = args.cardnet or s.cardnet
        if not where:
            raise Unavailable(
                "no card network: give --cardnet HOST:PORT or set SCANPAY_CARDNET",
                reason=CARD_RAIL_UNAVAILABLE,
            )
        try:
            host, port = parse_listen(where)
        except argparse.ArgumentTypeError as exc:
            raise ValidationError(str(exc), reason="INVALID_ARGUMENT") from None

        async def send() -> Any:
            client = CardNetworkClient(
                host,
                port,
                timeout=args.timeout if args.timeout is not None else s.cardnet_timeout,
                acquirer_id=s.acquirer_id,
                failure_threshold=s.cardnet_failure_threshold,
                reset_timeout=s.cardnet_reset_timeout,
            )
            try:
                disputes = DisputeServices(app.deps, app.merchants, client)
                return await disputes.submit_evidence(args.dispute, args.text)
            finally:
                await client.close()

        d = asyncio.run(send())
        emit(_dispute_json(d), args.json, _dispute_line(d))
        return 0

    return _run(args, body)


def _dispute_decide(args: argparse.Namespace) -> int:
    def body(app: Any) -> int:
        d = _disputes(app).decide(args.dispute, won=args.outcome == "won")
        emit(_dispute_json(d), args.json, _dispute_line(d))
        return 0

    return _run(args, body)
