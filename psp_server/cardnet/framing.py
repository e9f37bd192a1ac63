"""TCP framing: each ISO 8583 message is preceded by its length, 2 bytes big-endian."""

from __future__ import annotations

import asyncio

MAX_FRAME = 0xFFFF


class FrameError(ValueError):
    pass


def frame(payload: bytes) -> bytes:
    if not payload or len(payload) > MAX_FRAME:
        raise FrameError(f"frame payload must be 1..{MAX_FRAME} bytes")
    return len(payload).to_bytes(2, "big") + payload


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next payload, or ``None`` on a clean end of stream between frames.

    Raises :class:`asyncio.IncompleteReadError` when the stream ends inside a frame and
    :class:`FrameError` on a zero length.
    """
    try:
        header = await reader.readexactly(2)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    length = int.from_bytes(header, "big")
    if length == 0:
        raise FrameError("zero-length frame")
    return await reader.readexactly(length)


async def write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(frame(payload))
    await writer.drain()
