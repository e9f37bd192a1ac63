"""Scan: the browser's camera, the shop's camera (OpenCV on the serving machine), or a photo."""

from __future__ import annotations

import flet as ft
import flet_camera as fc
from flet.components.hooks.use_ref import MutableRef

from wallet_app.state import HOME, WalletState
from wallet_app.views.common import Banner, busy_ring, screen


@ft.component
def BrowserCameraPanel(state: WalletState) -> ft.Control:
    """The browser camera's live preview; frames are captured until a QR code decodes."""
    camera: MutableRef[fc.Camera] = ft.use_ref(None)

    async def start():
        await state.scan_browser_camera(lambda: camera.current)

    ft.use_effect(start, dependencies=[])
    preview: ft.Control = fc.Camera(
        ref=camera, width=320, height=240, preview_enabled=True, key="camera"
    )
    return preview


@ft.component
def ServerCameraPanel(state: WalletState) -> ft.Control:
    """Frames from the camera on the serving machine, shown as they come."""
    if state.server_preview is None:
        return ft.Container(ft.ProgressRing(), width=320, height=240, key="server-camera")
    return ft.Image(
        src=state.server_preview,
        width=320,
        height=240,
        fit=ft.BoxFit.CONTAIN,
        gapless_playback=True,
        key="server-camera",
    )


@ft.component
def Scan(state: WalletState) -> ft.Control:
    code, set_code = ft.use_state("")
    source = state.scan_source

    async def use_code(_=None):
        if code.strip():
            await state.submit_payload(code)

    buttons: list[ft.Control] = [
        ft.FilledButton(
            "Use camera",
            icon=ft.Icons.PHOTO_CAMERA,
            on_click=lambda _: state.choose_source("browser"),
            key="source-browser",
        ),
    ]
    if state.server_camera is not None:
        buttons.append(
            ft.OutlinedButton(
                "Shop camera",
                icon=ft.Icons.VIDEOCAM,
                on_click=lambda _: state.choose_source("server"),
                key="source-server",
            )
        )
    buttons.append(
        ft.OutlinedButton(
            "Choose photo", icon=ft.Icons.IMAGE, on_click=state.scan_photo, key="source-photo"
        )
    )
    panel = None
    if source == "browser":
        panel = BrowserCameraPanel(state)
    elif source == "server":
        panel = ServerCameraPanel(state)
    status = state.scan_status
    if source in ("browser", "server") and state.scan_frames:
        status = f"{status} ({state.scan_frames} frames)"
    return screen(
        "Scan to pay",
        Banner(state),
        ft.Row(buttons, wrap=True),
        panel,
        ft.Text(status, key="scan-status") if status else None,
        busy_ring(state),
        ft.ExpansionTile(
            title=ft.Text("Type or paste a code"),
            controls=[
                ft.TextField(
                    label="Payment code",
                    value=code,
                    on_change=lambda e: set_code(e.control.value),
                    on_submit=use_code,
                    key="manual-code",
                ),
                ft.OutlinedButton("Use code", on_click=use_code, key="manual-submit"),
            ],
        ),
        back=lambda _: state.go(HOME),
    )
