"""Small shared types: stream updates, reconnect backoff and the change pulse."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pos_terminal.client import EventType, Payment


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays for the payment stream and the first connection, in seconds."""

    initial: float = 0.25
    maximum: float = 5.0
    multiplier: float = 2.0

    def next(self, delay: float) -> float:
        return min(delay * self.multiplier, self.maximum)


@dataclass(frozen=True, slots=True)
class PaymentUpdate:
    payment: Payment
    event: EventType | None = None


class Pulse:
    """Wakes whoever waits whenever the till's state changes (tests and benchmarks use it)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def beat(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True
