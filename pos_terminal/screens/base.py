"""What every till screen shares: access to the app and the stale-result guard for workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast

from textual.screen import ModalScreen, Screen
from textual.worker import NoActiveWorker, Worker, get_current_worker

if TYPE_CHECKING:
    from pos_terminal.app import PosApp

ResultT = TypeVar("ResultT")


class RequestGuard:
    """Counts requests so a late answer to an old one is never shown over a newer state.

    Workers are ``exclusive``, so a newer request cancels the older; the guard also covers
    an answer that was already on its way when the screen moved on.
    """

    def __init__(self) -> None:
        self._generations: dict[str, int] = {}

    def begin(self, kind: str = "default") -> tuple[str, int]:
        """Start a request of ``kind``; answers to earlier requests of that kind go stale."""
        self._generations[kind] = self._generations.get(kind, 0) + 1
        return kind, self._generations[kind]

    def invalidate(self, kind: str = "default") -> None:
        self._generations[kind] = self._generations.get(kind, 0) + 1

    def stale(self, token: tuple[str, int], node: Any) -> bool:
        kind, generation = token
        if generation != self._generations.get(kind) or not node.is_attached:
            return True
        try:
            return get_current_worker().is_cancelled
        except NoActiveWorker:
            return False


class PosScreen(Screen[ResultT]):
    """A full till screen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = RequestGuard()

    @property
    def pos(self) -> PosApp:
        return cast("PosApp", self.app)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.pos.pulse.beat()


class PosModal(ModalScreen[ResultT]):
    """A dialog over a till screen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = RequestGuard()

    @property
    def pos(self) -> PosApp:
        return cast("PosApp", self.app)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.pos.pulse.beat()
