"""In-process event bus: after a commit, tell the streams of that merchant.

A notice carries the committed event (or only its sequence number, when it came from
another replica through PostgreSQL NOTIFY; or, in a gateway, the event already encoded by
the core); a stream that sees a gap reads the log.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from psp_server.domain.parties import Event


@dataclass(frozen=True, slots=True)
class Notice:
    merchant_id: str
    seq: int
    event: Event | None = None
    # The encoded PaymentEvent, where the notice came from the core (psp serve --gateways).
    data: bytes | None = None


class Subscription:
    def __init__(self, bus: EventBus, merchant_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.bus = bus
        self.merchant_id = merchant_id
        self.loop = loop
        self.queue: asyncio.Queue[Notice] = asyncio.Queue()

    def close(self) -> None:
        self.bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._taps: list[Callable[[Notice], None]] = []

    def tap(self, fn: Callable[[Notice], None]) -> None:
        """Also give every notice to ``fn`` (the core sends them on to its gateways), in
        the thread that publishes it, before the streams get it."""
        self._taps.append(fn)

    def subscribe(self, merchant_id: str) -> Subscription:
        sub = Subscription(self, merchant_id, asyncio.get_running_loop())
        with self._lock:
            self._subs[merchant_id].add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.merchant_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.merchant_id]

    def publish(self, notice: Notice) -> None:
        """Thread-safe; called after commit, on the event loop or on another thread."""
        for fn in self._taps:
            fn(notice)
        with self._lock:
            subs = list(self._subs.get(notice.merchant_id, ()))
        if not subs:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for sub in subs:
            if sub.loop is running:
                sub.queue.put_nowait(notice)
                continue
            try:
                sub.loop.call_soon_threadsafe(sub.queue.put_nowait, notice)
            except RuntimeError:  # the stream's loop is closed
                self._remove(sub)

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())
