"""The card network's TCP front: length-prefixed ISO 8583 frames over asyncio streams.

Every decoded request goes to the :class:`~psp_server.cardnet.switch.Switch` on one worker
thread (SQLite work stays off the event loop and requests are processed one at a time);
the answer is written only after the switch has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from psp_server.cardnet import spec
from psp_server.cardnet.framing import FrameError, read_frame, write_frame
from psp_server.cardnet.spec import Message, MessageFormatError
from psp_server.cardnet.store import Store
from psp_server.cardnet.switch import DEFAULT_HOLD_TTL, Switch

log = logging.getLogger("scanpay.cardnet")


class CardNetServer:
    def __init__(self, switch: Switch) -> None:
        self._switch = switch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cardnet-switch")
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._serve_connection, host, port)
        sockets = self._server.sockets
        bound: int = sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()
        # Let a request the switch is processing finish its commit.
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    async def _handle(self, msg: Message) -> Message | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._switch.handle, msg)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                payload = await read_frame(reader)
                if payload is None:
                    break
                try:
                    msg = spec.decode(payload)
                except MessageFormatError as exc:
                    log.warning("undecodable message from %s: %s", peer, exc)
                    reply = _format_error(payload)
                    if reply is None:
                        break
                    await write_frame(writer, reply)
                    continue
                log.debug("<- %s", spec.masked(msg))
                try:
                    response = await self._handle(msg)
                except Exception:
                    log.exception("switch failed on a %s", msg.get("t"))
                    response = {"t": spec.response_mti(msg["t"]), "39": "96"}
                    for f in ("7", "11", "32", "41", "42"):
                        if f in msg:
                            response[f] = msg[f]
                if response is None:
                    log.info("not answering %s STAN %s", msg.get("t"), msg.get("11"))
                    continue
                log.debug("-> %s", spec.masked(response))
                await write_frame(writer, spec.encode(response))
        except (asyncio.IncompleteReadError, ConnectionError, FrameError) as exc:
            log.info("connection from %s ended: %s", peer, exc)
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _format_error(payload: bytes) -> bytes | None:
    """A ``30`` answer to an undecodable request whose MTI we can still read."""
    mti = payload[:4].decode("ascii", errors="replace")
    if mti not in spec.REQUEST_MTIS:
        return None
    return spec.encode({"t": spec.response_mti(mti), "39": "30", "44": "format error"})


async def serve(
    host: str,
    port: int,
    data_dir: str | Path,
    *,
    hold_ttl: timedelta = DEFAULT_HOLD_TTL,
    ready: Callable[[str, int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the network until SIGTERM/SIGINT (or ``stop`` is set)."""
    store = Store(data_dir)
    switch = Switch(store, hold_ttl=hold_ttl)
    for batch_id in switch.repair_settlement_files():
        log.warning("rewrote the settlement file of batch %s", batch_id)
    server = CardNetServer(switch)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        bound = await server.start(host, port)
        if ready is not None:
            ready(host, bound)
        await stop.wait()
    finally:
        await server.close()
        store.close()
