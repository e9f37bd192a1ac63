"""Pieces every screen uses: the frame, the notice banner, money and time formatting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import flet as ft

from psp_server.domain.money import Money
from wallet_app.state import Notice, WalletState

WIDTH = 440

_NOTICE_STYLE = {
    "error": (ft.Colors.RED_50, ft.Colors.RED_800, ft.Icons.ERROR_OUTLINE),
    "warning": (ft.Colors.AMBER_50, ft.Colors.AMBER_900, ft.Icons.WARNING_AMBER),
    "info": (ft.Colors.GREEN_50, ft.Colors.GREEN_800, ft.Icons.CHECK_CIRCLE_OUTLINE),
}


def money(m: Money | None) -> str:
    return m.format() if m is not None else "–"


def when(t: datetime | None) -> str:
    if t is None:
        return ""
    return t.astimezone().strftime("%d %b %Y, %H:%M")


def countdown(seconds: int) -> str:
    return f"{seconds // 60}:{seconds % 60:02d}"


@ft.component
def NoticeCard(
    notice: Notice, on_dismiss: Callable[[Any], Any] | None = None, key_name: str = "notice"
) -> ft.Control:
    bg, fg, icon = _NOTICE_STYLE.get(notice.kind, _NOTICE_STYLE["error"])
    body: list[ft.Control] = [
        ft.Text(notice.title, weight=ft.FontWeight.BOLD, color=fg, key=f"{key_name}-title")
    ]
    if notice.message:
        body.append(ft.Text(notice.message, color=fg, key=f"{key_name}-message"))
    row: list[ft.Control] = [
        ft.Icon(icon, color=fg),
        ft.Column(body, spacing=2, expand=True),
    ]
    if on_dismiss is not None:
        row.append(
            ft.IconButton(ft.Icons.CLOSE, tooltip="Dismiss", on_click=on_dismiss, icon_color=fg)
        )
    return ft.Container(
        ft.Row(row, vertical_alignment=ft.CrossAxisAlignment.START),
        bgcolor=bg,
        border_radius=8,
        padding=12,
        key=key_name,
    )


@ft.component
def Banner(state: WalletState) -> ft.Control | None:
    """The current notice, if any, with a button to dismiss it."""
    if state.notice is None:
        return ft.Container(visible=False)
    return NoticeCard(state.notice, on_dismiss=lambda _: state.dismiss())


def screen(
    title: str, *controls: ft.Control | None, back: Callable[[Any], Any] | None = None
) -> ft.Control:
    """The common frame: a title row (with a back button when given) over a column."""
    head: list[ft.Control] = []
    if back is not None:
        head.append(ft.IconButton(ft.Icons.ARROW_BACK, tooltip="Back", on_click=back))
    head.append(ft.Text(title, size=22, weight=ft.FontWeight.BOLD))
    return ft.Container(
        ft.Column(
            [ft.Row(head), *(c for c in controls if c is not None)],
            spacing=14,
            scroll=ft.ScrollMode.AUTO,
        ),
        width=WIDTH,
        padding=16,
    )


def busy_ring(state: WalletState) -> ft.Control:
    return ft.ProgressBar(visible=state.busy or state.paying, key="busy")
