"""The card-network simulator as a real child process (``scanpay cardnet serve``)."""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from psp_server.cardnet.store import Store

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0


class CardnetProcess:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self._log = open(data_dir.parent / f"{data_dir.name}.stderr", "a")  # noqa: SIM115

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def settlement_dir(self) -> Path:
        return self.data_dir / "settlement"

    def start(self, port: int = 0) -> CardnetProcess:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "psp_server",
                "cardnet",
                "serve",
                "--listen",
                f"127.0.0.1:{port or self.port}",
                "--data",
                str(self.data_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=START_TIMEOUT):
                self.kill()
                raise TimeoutError("cardnet did not start in time")
        line = self.proc.stdout.readline()
        prefix = "cardnet listening on 127.0.0.1:"
        if not line.startswith(prefix):
            self.kill()
            raise RuntimeError(f"unexpected first line from cardnet: {line!r}")
        self.port = int(line[len(prefix) :])
        return self

    def _reap(self) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=15)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self._reap()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self._reap()

    def close(self) -> None:
        self.kill()
        self._log.close()

    # -- looking inside (read-only) ---------------------------------------------------

    def holds(self, merchant_id: str) -> int:
        store = Store(self.data_dir, readonly=True)
        try:
            now = datetime.now(UTC)
            return sum(1 for t in store.active_holds(now) if t.merchant_id == merchant_id)
        finally:
            store.close()

    def statuses(self, merchant_id: str) -> dict[str, str]:
        store = Store(self.data_dir, readonly=True)
        try:
            return {t.ntid: t.status for t in store.transactions() if t.merchant_id == merchant_id}
        finally:
            store.close()
