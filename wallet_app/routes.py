"""Which screen shows for which route, the root component, and the session's wiring.

The route lives in ``WalletState.route``, not in the browser's URL: every screen past
sign-in depends on what happened in this session (a quote, a receipt), so a deep link
could only ever land on Home. A page reload resumes the session from the refresh token
in the browser's storage and lands on Home.
"""

from __future__ import annotations

import asyncio

import flet as ft

from wallet_app.client import WalletClient
from wallet_app.state import (
    CONFIRM,
    HISTORY,
    HOME,
    LOADING,
    RECEIPT,
    SCAN,
    SIGN_IN,
    CameraFeed,
    ImagePicker,
    TokenStore,
    WalletState,
)
from wallet_app.views.confirm import Confirm
from wallet_app.views.history import History
from wallet_app.views.home import Home
from wallet_app.views.receipt import ReceiptView
from wallet_app.views.scan import Scan
from wallet_app.views.signin import SignIn

ROUTES = {
    SIGN_IN: SignIn,
    HOME: Home,
    SCAN: Scan,
    CONFIRM: Confirm,
    RECEIPT: ReceiptView,
    HISTORY: History,
}
#: Routes that need a signed-in consumer; without one, Sign in shows instead.
SIGNED_IN = frozenset({HOME, SCAN, CONFIRM, RECEIPT, HISTORY})

STORAGE_KEY = "scanpay.wallet.refresh_token"


@ft.component
def Loading() -> ft.Control:
    return ft.Container(
        ft.Column([ft.ProgressRing(), ft.Text("Opening your wallet…")]),
        padding=40,
        key="loading",
    )


@ft.component
def App(state: WalletState) -> ft.Control:
    route = state.route
    if route == LOADING:
        body = Loading()
    else:
        if route in SIGNED_IN and state.consumer is None:
            route = SIGN_IN
        body = ROUTES.get(route, Home)(state)
    return ft.SafeArea(
        ft.Row(
            [body],
            alignment=ft.MainAxisAlignment.CENTER,
            vertical_alignment=ft.CrossAxisAlignment.START,
        ),
        expand=True,
    )


class PrefsTokenStore:
    """The refresh token in the browser's local storage (``SharedPreferences`` on the web).

    Flet waits for the browser's answer without a limit; a browser that never answers
    (a page going away, a storage call it dropped) must not hang the wallet, so every call
    gives up after ``timeout`` seconds with ``TimeoutError``."""

    def __init__(self, prefs: ft.SharedPreferences, timeout: float = 5.0) -> None:
        self._prefs = prefs
        self._timeout = timeout

    async def load(self) -> str | None:
        value = await asyncio.wait_for(self._prefs.get(STORAGE_KEY), self._timeout)
        return value if isinstance(value, str) and value else None

    async def save(self, token: str) -> None:
        await asyncio.wait_for(self._prefs.set(STORAGE_KEY, token), self._timeout)

    async def clear(self) -> None:
        await asyncio.wait_for(self._prefs.remove(STORAGE_KEY), self._timeout)


def image_picker(picker: ft.FilePicker) -> ImagePicker:
    """Pick one picture with the browser's file dialog (a phone offers its camera too)."""

    async def pick() -> bytes | None:
        files = await picker.pick_files(
            dialog_title="A photo of the QR code",
            file_type=ft.FilePickerFileType.IMAGE,
            with_data=True,
        )
        return files[0].bytes if files and files[0].bytes else None

    return pick


def mount(page: ft.Page, state: WalletState) -> None:
    """Render the wallet into ``page`` and stop the state's tasks when the page goes."""
    page.title = "ScanPay wallet"
    page.theme = ft.Theme(color_scheme_seed=ft.Colors.INDIGO)

    async def closed(_: ft.Event[ft.Page]) -> None:
        await state.close()

    async def reconnected(_: ft.Event[ft.Page]) -> None:
        state.resume()

    # A tab that went away (closed, phone locked) stops polling and scanning until it
    # comes back; an expired session stops for good.
    page.on_disconnect = closed
    page.on_connect = reconnected
    page.on_close = closed
    page.render(App, state)


async def run_session(
    page: ft.Page,
    client: WalletClient,
    *,
    camera: CameraFeed | None = None,
    storage: TokenStore | None = None,
) -> WalletState:
    """One browser session: wire the browser services, show the app, resume the session."""
    state = WalletState(
        client=client,
        storage=storage or PrefsTokenStore(ft.SharedPreferences()),
        pick_image=image_picker(ft.FilePicker()),
        server_camera=camera,
    )
    mount(page, state)
    await state.start()
    return state
