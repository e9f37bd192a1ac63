"""End-to-end pay throughput: concurrent wallets paying dynamic QRs against a PSP server
process (create QR + resolve + pay + the merchant's event received), on SQLite with
durable commits (WAL, synchronous=FULL) or PostgreSQL.

    .venv/bin/python benchmarks/pay_throughput.py [--seconds 20] [--concurrency 64]
        [--db postgresql://postgres@127.0.0.1:5432/test] [--clients 1]
        [--client cpp|python] [--floor]

Prints pay/s, p50/p99 pay latency, p99 pay-to-event latency, the CPU per pay of the
server and of the load generator, and the bare gRPC echo ceiling measured with the same
client just before and just after the pay run (this machine's speed drifts: both are
printed, the ratio uses their mean).

With --floor it then runs the same load for as long against benchmarks/grpc_floor_server.py,
which answers the same four calls from memory in one process, and prints that floor's pay/s
and server CPU per pay: what gRPC alone costs for this sale, the part of the server's CPU
that no work on the PSP can remove.

The load generator (--client) is by default a C++ program, benchmarks/loadgen/pay_load.cc:
it does what run_pay_load and run_echo_load below do (the Python client, --client python)
for about half their CPU (0.6-0.75 ms per pay against 1.2-1.9 ms on the 2-core machine,
2026-12-03), which is CPU left to the server under test. It is built on first use, and again when
its source or the protos change, by benchmarks/loadgen/build.sh into
benchmarks/loadgen/build/, from Debian's gRPC C++ packages, which the script installs when
run as root. Wallets sign in from Python either way. With --clients N, each C++ load
generator has wallets of its own; the server's CPU is taken from the first one's start to
the last one's end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protos.scanpay.v1 import (  # noqa: E402
    common_pb2,
    merchant_pb2,
    merchant_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)

PASSWORD = "benchmark-password"
T = TypeVar("T")
TILLS = 8  # merchant connections (tills); each payer has a connection of its own
LOADGEN = ROOT / "benchmarks" / "loadgen"


def start(
    cmd: list[str], prefix: str, env: dict[str, str] | None = None, log: str = ""
) -> tuple[subprocess.Popen[str], str]:
    stderr: Any = open(log, "a") if log else subprocess.DEVNULL  # noqa: SIM115 (open while the server runs)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return proc, line.split()[3]
    raise RuntimeError(f"{cmd} did not start")


def start_psp(
    data: Path,
    db: str,
    event_loop: str,
    workers: int = 1,
    log: str = "",
    extra: list[str] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """``scanpay psp serve`` on ``db`` (seeded with the benchmark's secret); returns the
    process and the address it announced."""
    cmd = [sys.executable, "-m", "psp_server", "psp", "serve", "--listen", "127.0.0.1:0"]
    cmd += ["--data", str(data), "--db", db, "--workers", str(workers)]
    cmd += ["--event-loop", event_loop, *(extra or [])]
    env = dict(os.environ, SCANPAY_SECRET="bench-secret")
    return start(cmd, "psp listening on", env, log)


def start_floor(event_loop: str) -> tuple[subprocess.Popen[str], str]:
    """The same sale answered from memory (benchmarks/grpc_floor_server.py)."""
    script = str(ROOT / "benchmarks" / "grpc_floor_server.py")
    return start([sys.executable, script, "127.0.0.1:0", event_loop], "floor listening on")


def measure_floor(args: argparse.Namespace, loadgen: Path | None, data: Path) -> dict[str, object]:
    """The sale's gRPC floor: the same load generator, payers and seconds against a
    server that answers the same four calls from memory (one process, no database)."""
    floor, floor_addr = start_floor(args.event_loop)
    try:
        emails = [f"floor{i}@example.com" for i in range(args.wallets)]
        if loadgen:
            path = data / "tokens-floor.txt"
            path.write_text("".join(f"floor-{e}\n" for e in emails))
            cmd = [str(loadgen), "pay", "--address", floor_addr, "--api-key", "floor"]
            cmd += ["--tokens", str(path), "--seconds", str(args.seconds)]
            cmd += ["--concurrency", str(args.concurrency)]
            return run_loadgen([cmd], floor.pid)[0]
        return run_on(
            args.event_loop,
            run_pay_load(floor_addr, "floor", emails, args.seconds, args.concurrency, floor.pid),
        )
    finally:
        floor.terminate()
        floor.wait(timeout=30)


def start_echo(event_loop: str) -> tuple[subprocess.Popen[str], str]:
    """The bare gRPC echo server (benchmarks/echo_server.py) on ``event_loop``."""
    script = str(ROOT / "benchmarks" / "echo_server.py")
    return start([sys.executable, script, "127.0.0.1:0", event_loop], "echo listening on")


def seed(data: Path, db: str, wallets: int) -> dict[str, object]:
    from psp_server.bootstrap import build_app
    from psp_server.config import Settings

    app = build_app(Settings(data_dir=data, db_url=db, secret=b"bench-secret"))
    m = app.admin.create_merchant(
        name="Bench Market", city="Berlin", country="DE", currency="EUR", mcc="5411"
    )
    t = app.admin.create_terminal(m.id, "Till 1")
    emails = []
    run = uuid.uuid4().hex[:6]
    for i in range(wallets):
        email = f"bench{i}-{run}@example.com"
        c = app.admin.create_consumer(email=email, password=PASSWORD, currency="EUR", kyc_tier=3)
        app.admin.top_up(c.id, 900_000_00, "EUR")
        emails.append(email)
    app.close()
    return {"api_key": t.api_key, "emails": emails}


def proc_cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children (the worker processes)."""
    total = proc_cpu_seconds(pid)
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return total + sum(proc_cpu_seconds(int(k)) for k in kids)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def run_pay_load(
    address: str,
    api_key: str,
    emails: list[str],
    seconds: float,
    concurrency: int,
    server_pid: int | None = None,
) -> dict[str, object]:
    md_m = (("authorization", f"Bearer {api_key}"),)

    # A connection per till and per phone, as in a shop, so that several server processes
    # (--workers) all get work. Channels with identical arguments share one connection in
    # grpc: a distinct argument each keeps them apart.
    def channel(n: int) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            address,
            options=[("grpc.use_local_subchannel_pool", 1), ("scanpay.bench_connection", n)],
        )

    till_channels = [channel(n) for n in range(TILLS)]
    phone_channels = [channel(TILLS + n) for n in range(concurrency)]
    channels = till_channels + phone_channels
    mstub = [merchant_pb2_grpc.MerchantServiceStub(c) for c in till_channels]
    wstub = [wallet_pb2_grpc.WalletServiceStub(c) for c in phone_channels]
    tokens = []
    for e in emails:
        s = await wstub[0].Login(wallet_pb2.LoginRequest(email=e, password=PASSWORD))
        tokens.append(s.access_token)

    sent_at: dict[str, float] = {}
    event_lat: list[float] = []
    seen: set[str] = set()
    stream_ready = asyncio.Event()

    async def watch() -> None:
        call = mstub[0].WatchPayments(
            merchant_pb2.WatchPaymentsRequest(after_cursor=""), metadata=md_m
        )
        stream_ready.set()
        async for ev in call:
            if ev.type == merchant_pb2.PAYMENT_EVENT_TYPE_SUCCEEDED:
                t0 = sent_at.pop(ev.payment.id, None)
                seen.add(ev.payment.id)
                if t0 is not None:
                    event_lat.append(time.perf_counter() - t0)

    watcher = asyncio.create_task(watch())
    await stream_ready.wait()
    pay_lat: list[float] = []
    cycle_lat: list[float] = []
    errors: dict[str, int] = {}
    done = 0
    stop_at = time.perf_counter() + seconds
    paid_ids: list[str] = []

    async def worker(i: int) -> None:
        nonlocal done
        md_w = (("authorization", f"Bearer {tokens[i % len(tokens)]}"),)
        ms, ws = mstub[i % TILLS], wstub[i]
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
            t0 = time.perf_counter()
            try:
                p = await ms.CreatePayment(
                    merchant_pb2.CreatePaymentRequest(
                        order_id=f"B{i}-{n}",
                        amount=common_pb2.Money(amount_minor=100 + n % 900, currency="EUR"),
                        idempotency_key=uuid.uuid4().hex,
                    ),
                    metadata=md_m,
                )
                q = await ws.ResolveQr(
                    wallet_pb2.ResolveQrRequest(payload=p.qr_payload), metadata=md_w
                )
                t1 = time.perf_counter()
                sent_at[p.id] = t1
                await ws.Pay(
                    wallet_pb2.PayRequest(quote_id=q.quote_id, idempotency_key=uuid.uuid4().hex),
                    metadata=md_w,
                )
                t2 = time.perf_counter()
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                continue
            pay_lat.append(t2 - t1)
            cycle_lat.append(t2 - t0)
            paid_ids.append(p.id)
            done += 1

    started = time.perf_counter()
    cpu0 = tree_cpu_seconds(server_pid) if server_pid else float("nan")
    own0 = time.process_time()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    server_cpu = (tree_cpu_seconds(server_pid) if server_pid else float("nan")) - cpu0
    client_cpu = time.process_time() - own0
    # Wait (bounded) for the last events.
    deadline = time.perf_counter() + 10
    while len(seen) < len(paid_ids) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    watcher.cancel()
    for c in channels:
        await c.close()
    missing = len(set(paid_ids) - seen)
    return {
        "payments": done,
        "elapsed_s": round(elapsed, 2),
        "pay_per_s": round(done / elapsed, 1),
        "pay_p50_ms": round(pct(pay_lat, 50) * 1000, 2),
        "pay_p99_ms": round(pct(pay_lat, 99) * 1000, 2),
        "cycle_p50_ms": round(pct(cycle_lat, 50) * 1000, 2),
        "cycle_p99_ms": round(pct(cycle_lat, 99) * 1000, 2),
        "event_p50_ms": round(pct(event_lat, 50) * 1000, 2),
        "event_p99_ms": round(pct(event_lat, 99) * 1000, 2),
        "events_missing": missing,
        "errors": errors,
        "server_cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
    }


async def run_echo_load(address: str, seconds: float, concurrency: int) -> dict[str, object]:
    channels = [grpc.aio.insecure_channel(address) for _ in range(4)]
    calls = [c.unary_unary("/bench.Echo/Echo") for c in channels]
    done = 0
    stop_at = time.perf_counter() + seconds
    payload = b"x" * 200

    async def worker(i: int) -> None:
        nonlocal done
        call = calls[i % 4]
        while time.perf_counter() < stop_at:
            await call(payload)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - t0
    for c in channels:
        await c.close()
    return {"calls": done, "calls_per_s": round(done / elapsed, 1)}


def build_loadgen() -> Path:
    """The C++ load generator, built if it is missing or older than its sources."""
    proc = subprocess.run(["bash", str(LOADGEN / "build.sh")], cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(
            "pay_throughput: the C++ load generator could not be built (see above);"
            " use --client python"
        )
    return LOADGEN / "build" / "pay_load"


async def login(address: str, emails: list[str]) -> list[str]:
    """The wallets' access tokens, for the C++ load generator."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        tokens = []
        for e in emails:
            s = await stub.Login(wallet_pb2.LoginRequest(email=e, password=PASSWORD))
            tokens.append(s.access_token)
    return tokens


def run_loadgen(cmds: list[list[str]], server_pid: int | None = None) -> list[dict[str, object]]:
    """Runs C++ load generators side by side and returns what each printed, with
    server_cpu_s: the server's CPU from the first one's `started` to the last one's
    `finished` (the load generators measure their own CPU in that window)."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True, cwd=ROOT) for c in cmds]
    lock = threading.Lock()
    marks = {"started": 0, "finished": 0}
    server_cpu: dict[str, float] = {}
    results: list[dict[str, object] | None] = [None] * len(procs)

    def read(k: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            word = line.strip()
            if word in marks:
                with lock:
                    n = marks[word] = marks[word] + 1
                    if n == (1 if word == "started" else len(procs)):
                        server_cpu[word] = (
                            tree_cpu_seconds(server_pid) if server_pid else float("nan")
                        )
            elif word.startswith("{"):
                results[k] = json.loads(word)

    readers = [threading.Thread(target=read, args=(k, p)) for k, p in enumerate(procs)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    codes = [p.wait() for p in procs]
    if any(codes) or any(r is None for r in results):
        sys.exit(f"pay_throughput: the C++ load generator failed (exit codes {codes})")
    out = [r for r in results if r is not None]
    for r in out:
        r["server_cpu_s"] = server_cpu["finished"] - server_cpu["started"]
    return out


def measure_echo(args: argparse.Namespace, loadgen: Path | None) -> list[dict[str, object]]:
    """The bare echo server's calls/s for a quarter of the run, with the same client and
    event loop as the pay load (one result per client process)."""
    echo, echo_addr = start_echo(args.event_loop)
    seconds = args.seconds / 4
    try:
        if loadgen:
            ecmd = [str(loadgen), "echo", "--address", echo_addr]
            ecmd += ["--seconds", str(seconds), "--concurrency", str(args.concurrency)]
            return run_loadgen([ecmd] * args.clients)
        eargs = [(echo_addr, seconds, args.concurrency) for _ in range(args.clients)]
        if args.clients == 1:
            return [run_on(args.event_loop, run_echo_load(*eargs[0]))]
        return in_processes("echo", args.event_loop, args.clients, eargs)
    finally:
        echo.terminate()
        echo.wait(timeout=30)


def run_on(loop: str, coro: Coroutine[Any, Any, T]) -> T:
    """The load generators run on the same kind of event loop as the server."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def _client_proc(kind: str, loop: str, args: tuple, out: mp.Queue[dict[str, object]]) -> None:
    if kind == "pay":
        out.put(run_on(loop, run_pay_load(*args)))
    else:
        out.put(run_on(loop, run_echo_load(*args)))


def in_processes(
    kind: str, loop: str, clients: int, argsets: list[tuple]
) -> list[dict[str, object]]:
    ctx = mp.get_context("spawn")
    q: mp.Queue[dict[str, object]] = ctx.Queue()
    procs = [ctx.Process(target=_client_proc, args=(kind, loop, a, q)) for a in argsets[:clients]]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument(
        "--concurrency", type=int, default=64, help="concurrent payers per client process"
    )
    ap.add_argument("--clients", type=int, default=1, help="load-generator processes")
    ap.add_argument(
        "--client",
        choices=("cpp", "python"),
        default="cpp",
        help="load generator: C++ (benchmarks/loadgen, cheap) or Python grpc.aio",
    )
    ap.add_argument("--wallets", type=int, default=64)
    ap.add_argument("--db", default="", help="database URL (default: SQLite in a temp dir)")
    ap.add_argument("--workers", type=int, default=1, help="PSP server processes")
    ap.add_argument(
        "--gateways",
        type=int,
        default=0,
        help="the server's --gateways: gRPC processes handing calls to one core process",
    )
    ap.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        help="for the server, the echo server and the Python load generators",
    )
    ap.add_argument("--server-log", default="", help="append the PSP server's log to this file")
    ap.add_argument(
        "--commit-delay-ms",
        default=None,
        help="the server's --commit-delay-ms (default: the server's own default)",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--no-echo", action="store_true", help="skip the echo ceiling (quicker A/B runs)"
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also run the same load against benchmarks/grpc_floor_server.py (the same "
        "calls answered from memory) and print what gRPC alone costs per sale",
    )
    args = ap.parse_args()
    loadgen = build_loadgen() if args.client == "cpp" else None

    echo_after: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as cleanup:
        data = Path(tmp)
        db = args.db or f"sqlite:///{data / 'psp.db'}"
        if db.startswith("postgresql"):
            # A fresh database per run.
            import psycopg

            name = f"scanpay_bench_{uuid.uuid4().hex[:8]}"
            admin = db.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{name}"')

            def drop() -> None:  # once the server is gone, also after a failed run
                with psycopg.connect(admin, autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

            cleanup.callback(drop)
            db = db.rsplit("/", 1)[0] + "/" + name
        # The echo ceiling before and after the pay run: this machine's speed drifts by
        # minutes, and the two figures show how much it moved meanwhile.
        echo_before = [] if args.no_echo else measure_echo(args, loadgen)
        seeded = seed(data, db, args.wallets * args.clients)
        extra = [] if args.commit_delay_ms is None else ["--commit-delay-ms", args.commit_delay_ms]
        if args.gateways:
            extra += ["--gateways", str(args.gateways)]
        server, address = start_psp(data, db, args.event_loop, args.workers, args.server_log, extra)
        try:
            emails = list(seeded["emails"])  # type: ignore[call-overload]
            per = len(emails) // args.clients
            argsets = [
                (
                    address,
                    seeded["api_key"],
                    emails[i * per : (i + 1) * per],
                    args.seconds,
                    args.concurrency,
                    server.pid if i == 0 else None,
                )
                for i in range(args.clients)
            ]
            if loadgen:
                # Signed in here; each load generator gets its wallets' tokens in a file.
                tokens = run_on(args.event_loop, login(address, emails))
                cmds = []
                for i in range(args.clients):
                    path = data / f"tokens-{i}.txt"
                    path.write_text("".join(t + "\n" for t in tokens[i * per : (i + 1) * per]))
                    cmd = [str(loadgen), "pay", "--address", address]
                    cmd += ["--api-key", str(seeded["api_key"]), "--tokens", str(path)]
                    cmd += ["--seconds", str(args.seconds), "--concurrency", str(args.concurrency)]
                    cmds.append(cmd)
                results = run_loadgen(cmds, server.pid)
            elif args.clients == 1:
                results = [run_on(args.event_loop, run_pay_load(*argsets[0]))]
            else:
                results = in_processes("pay", args.event_loop, args.clients, argsets)
            # CPU while paying (sign-in excluded); one client measures the server.
            server_cpu = float(results[0]["server_cpu_s"])  # type: ignore[arg-type]
            client_cpu = sum(float(r["client_cpu_s"]) for r in results)  # type: ignore[arg-type]
        finally:
            server.terminate()
            server.wait(timeout=30)
        if not args.no_echo:
            echo_after = measure_echo(args, loadgen)
        floor = measure_floor(args, loadgen, data) if args.floor else None

    pays = sum(int(r["payments"]) for r in results)  # type: ignore[call-overload]
    elapsed = max(float(r["elapsed_s"]) for r in results)  # type: ignore[arg-type]
    rates = [
        sum(float(r["calls_per_s"]) for r in e)  # type: ignore[arg-type]
        for e in (echo_before, echo_after)
    ]
    echo_rate = (rates[0] + rates[1]) / 2
    summary = {
        "backend": "postgresql"
        if db.startswith("postgresql")
        else "sqlite (WAL, synchronous=FULL)",
        "cores": os.cpu_count(),
        "server_workers": args.workers,
        "server_gateways": args.gateways,
        "event_loop": args.event_loop,
        "client": args.client,
        "commit_delay_ms": args.commit_delay_ms or "server default",
        "clients": args.clients,
        "concurrency": args.concurrency,
        "pay_per_s": round(pays / elapsed, 1),
        "rpcs_per_pay": 3,
        "pay_p50_ms": max(r["pay_p50_ms"] for r in results),  # type: ignore[type-var]
        "pay_p99_ms": max(r["pay_p99_ms"] for r in results),  # type: ignore[type-var]
        "pay_to_event_p99_ms": max(r["event_p99_ms"] for r in results),  # type: ignore[type-var]
        "events_missing": sum(int(r["events_missing"]) for r in results),  # type: ignore[call-overload]
        "errors": [r["errors"] for r in results],
        "server_cpu_ms_per_pay": round(server_cpu / max(pays, 1) * 1000, 3),
        "client_cpu_ms_per_pay": round(client_cpu / max(pays, 1) * 1000, 3),
        "echo_calls_per_s": round(echo_rate, 1),
        "echo_before_after": [round(r, 1) for r in rates],
        "pay_rpcs_vs_echo": round(3 * pays / elapsed / echo_rate, 3) if echo_rate else None,
    }
    if floor is not None:
        floor_pays = int(floor["payments"])  # type: ignore[call-overload]
        floor_rate = floor_pays / float(floor["elapsed_s"])  # type: ignore[arg-type]
        summary["floor_pay_per_s"] = round(floor_rate, 1)
        summary["floor_server_cpu_ms_per_pay"] = round(
            float(floor["server_cpu_s"]) / max(floor_pays, 1) * 1000,  # type: ignore[arg-type]
            3,
        )
        summary["floor_events_missing"] = floor["events_missing"]
        summary["pay_vs_floor"] = round(pays / elapsed / floor_rate, 3)
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
