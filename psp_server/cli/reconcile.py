"""`scanpay reconcile --file SETTLEMENT.csv` or `--date YYYY-MM-DD`: the network's
settlement file against the PSP's ledger. Prints a table, writes the report as JSON, and
exits 1 when anything does not match (2 for a file or date that cannot be read)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from psp_server.cli.common import add_db_args, settings_from


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "reconcile", help="compare a card settlement file with the ledger"
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--file", type=Path, help="a settlement file (CSV) from the card network")
    what.add_argument(
        "--date", help="every batch settling on YYYY-MM-DD (files recorded at batch close)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the JSON report (default: <data>/reconcile/<name>.json)",
    )
    add_db_args(p)
    p.set_defaults(func=_reconcile)


def _reconcile(args: argparse.Namespace) -> int:
    from psp_server.adapters import migrate
    from psp_server.adapters.db import make_engine
    from psp_server.adapters.store import SqlStore
    from psp_server.cardnet.settlement import SettlementRow, parse_csv
    from psp_server.service.reconcile import batch_files_for, reconcile

    settings = settings_from(args)
    migrate.upgrade(settings.db_url)
    engine = make_engine(settings.db_url, writer=False)
    try:
        rows: list[SettlementRow] = []
        if args.file is not None:
            files = [args.file]
            name = args.file.stem
        else:
            try:
                day = date.fromisoformat(args.date).isoformat()
            except ValueError:
                print(f"error: --date wants YYYY-MM-DD, got {args.date!r}", file=sys.stderr)
                return 2
            with engine.connect() as conn:
                found = batch_files_for(SqlStore(conn), day)
            files = [Path(f) for _, f in found if f]
            missing = [b for b, f in found if not f]
            if missing:
                print(
                    f"error: no settlement file recorded for {', '.join(missing)}", file=sys.stderr
                )
                return 2
            name = day
        for f in files:
            try:
                rows.extend(parse_csv(f.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError) as exc:
                print(f"error: cannot read {f}: {exc}", file=sys.stderr)
                return 2
        with engine.connect() as conn:
            report = reconcile(SqlStore(conn), rows)
    finally:
        engine.dispose()

    header = (
        "status",
        "batch",
        "ntid",
        "type",
        "cur",
        "file",
        "ledger",
        "file fees",
        "ledger fees",
    )
    table = [header] + [
        (
            f.status,
            f.batch_id,
            f.network_transaction_id,
            f.type,
            f.currency,
            _n(f.file_gross),
            _n(f.ledger_gross),
            _n(f.file_fees),
            _n(f.ledger_fees),
        )
        for f in report.findings
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    counts = report.counts
    print(", ".join(f"{k} {v}" for k, v in counts.items()))
    out: Path = args.out or settings.data_dir / "reconcile" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    print(f"report written to {out}")
    return 0 if report.ok else 1


def _n(v: int | None) -> str:
    return "-" if v is None else str(v)
