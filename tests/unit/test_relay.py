"""The relay between gateways and the core (api/relay.py), over a real Unix socket."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from psp_server.api import relay
from psp_server.api.errors import handles_errors
from psp_server.domain.errors import PreconditionFailed


class Echo:
    """Handlers as the core has them: (request bytes, context) -> response."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def echo(self, raw: bytes, ctx: Any) -> bytes:
        auth = dict(ctx.invocation_metadata()).get("authorization", "")
        return auth.encode() + b"|" + raw

    async def slow(self, raw: bytes, ctx: Any) -> bytes:
        await self.release.wait()
        return raw

    @handles_errors
    async def refuse(self, raw: bytes, ctx: Any) -> bytes:
        raise PreconditionFailed("this payment was already paid", reason="PAYMENT_ALREADY_PAID")

    async def broken(self, raw: bytes, ctx: Any) -> bytes:
        raise RuntimeError("a bug")


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[relay.RelayCore, relay.RelayClient, Echo]]:
    h = Echo()
    core = relay.RelayCore([h.echo, h.slow, h.refuse, h.broken])
    path = str(tmp_path / "core.sock")
    await core.start(path)
    events: list[tuple[str, int, bytes]] = []
    client = relay.RelayClient(lambda m, s, d: events.append((m, s, d)))
    client.events = events  # type: ignore[attr-defined]
    await client.connect(path)
    try:
        yield core, client, h
    finally:
        client.close()
        await core.stop()


def _reason(status: grpc.Status) -> str:
    (blob,) = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    st = status_pb2.Status.FromString(blob)
    info = error_details_pb2.ErrorInfo()
    st.details[0].Unpack(info)
    return info.reason


async def test_calls_in_flight_together_each_get_their_own_answer(pair: Any) -> None:
    _, client, _ = pair
    answers = await asyncio.gather(
        *(client.call(0, f"Bearer k{i}", f"body{i}".encode() * i) for i in range(200))
    )
    assert answers == [f"Bearer k{i}|".encode() + f"body{i}".encode() * i for i in range(200)]


async def test_an_authorization_too_long_to_frame_goes_as_none(pair: Any) -> None:
    _, client, _ = pair
    assert await client.call(0, "Bearer " + "x" * 70_000, b"body") == b"|body"


async def test_a_domain_error_keeps_its_code_message_and_reason(pair: Any) -> None:
    _, client, _ = pair
    with pytest.raises(relay.Aborted) as err:
        await client.call(2, "", b"")
    assert err.value.status.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.status.details == "this payment was already paid"
    assert _reason(err.value.status) == "PAYMENT_ALREADY_PAID"


async def test_an_unknown_method_and_a_bug_are_clear_statuses(pair: Any) -> None:
    _, client, _ = pair
    with pytest.raises(relay.Aborted) as err:
        await client.call(99, "", b"")
    assert err.value.status.code == grpc.StatusCode.UNIMPLEMENTED
    assert _reason(err.value.status) == "UNKNOWN_METHOD"
    with pytest.raises(relay.Aborted) as err:
        await client.call(3, "", b"")
    assert err.value.status.code == grpc.StatusCode.INTERNAL
    assert _reason(err.value.status) == "INTERNAL"
    assert "a bug" not in err.value.status.details  # logged, not sent
    # The connection is still good.
    assert await client.call(0, "", b"x") == b"|x"


async def test_losing_the_core_fails_the_calls_in_flight_as_unavailable(pair: Any) -> None:
    core, client, _ = pair
    pending = client.call(1, "", b"never answered")
    await asyncio.sleep(0.05)  # it reached the core
    await core.stop()
    with pytest.raises(relay.Aborted) as err:
        await asyncio.wait_for(pending, 5)
    assert err.value.status.code == grpc.StatusCode.UNAVAILABLE
    assert _reason(err.value.status) == "CORE_UNAVAILABLE"
    await asyncio.wait_for(client.closed.wait(), 5)
    with pytest.raises(relay.Aborted) as err:
        await client.call(0, "", b"later")
    assert err.value.status.code == grpc.StatusCode.UNAVAILABLE


async def test_events_reach_the_gateway_in_order(pair: Any) -> None:
    core, client, _ = pair
    for seq in range(1, 6):
        core.publish("mer_X", seq, f"event {seq}".encode())
    core.publish("mer_Y", 1, b"")
    await client.call(0, "", b"")  # sent after the events, on the same connection
    assert client.events == [
        *(("mer_X", s, f"event {s}".encode()) for s in range(1, 6)),
        ("mer_Y", 1, b""),
    ]


async def test_frames_cut_anywhere_are_put_back_together(tmp_path: Path) -> None:
    h = Echo()
    core = relay.RelayCore([h.echo])
    path = str(tmp_path / "core.sock")
    await core.start(path)
    loop = asyncio.get_running_loop()
    try:
        auth = b"Bearer abc"
        body = b"payload" * 10
        frames = b""
        for call_id in (1, 2, 3):
            inner = struct.pack(">IHH", call_id, 0, len(auth)) + auth + body
            frames += struct.pack(">I", len(inner)) + inner
        with socket.socket(socket.AF_UNIX) as s:
            s.setblocking(False)
            await loop.sock_connect(s, path)
            for i in range(len(frames)):  # one byte at a time
                await loop.sock_sendall(s, frames[i : i + 1])
            got = b""
            while got.count(b"payload" * 10) < 3:
                chunk = await asyncio.wait_for(loop.sock_recv(s, 65536), 5)
                assert chunk
                got += chunk
        ids = []
        pos = 0
        while pos < len(got):
            (n,) = struct.unpack_from(">I", got, pos)
            call_id, kind = struct.unpack_from(">IB", got, pos + 4)
            assert kind == relay.OK
            assert got[pos + 9 : pos + 4 + n] == auth + b"|" + body
            ids.append(call_id)
            pos += 4 + n
        assert ids == [1, 2, 3]
    finally:
        await core.stop()


async def test_an_oversize_frame_drops_the_connection(tmp_path: Path) -> None:
    core = relay.RelayCore([Echo().echo])
    path = str(tmp_path / "core.sock")
    await core.start(path)
    loop = asyncio.get_running_loop()
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.setblocking(False)
            await loop.sock_connect(s, path)
            await loop.sock_sendall(s, struct.pack(">I", relay.MAX_FRAME + 1) + b"x" * 64)
            assert await asyncio.wait_for(loop.sock_recv(s, 10), 5) == b""
        assert core.connected() == 0
    finally:
        await core.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux's")
async def test_an_abstract_socket_name_leaves_no_file(tmp_path: Path) -> None:
    # What psp serve --gateways uses on Linux: nothing stays behind a killed core.
    name = f"@scanpay-test-{uuid.uuid4().hex}"
    core = relay.RelayCore([Echo().echo])
    await core.start(name)
    client = relay.RelayClient()
    try:
        await client.connect(name)
        assert await client.call(0, "Bearer k", b"hi") == b"Bearer k|hi"
        assert not Path(name).exists()
    finally:
        client.close()
        await core.stop()


async def test_a_core_starts_again_on_the_socket_file_of_an_earlier_run(tmp_path: Path) -> None:
    path = str(tmp_path / "core.sock")
    first = relay.RelayCore([Echo().echo])
    await first.start(path)
    await first.stop()
    assert Path(path).exists()  # as a killed core leaves it
    again = relay.RelayCore([Echo().echo])
    await again.start(path)
    client = relay.RelayClient()
    try:
        await client.connect(path)
        assert await client.call(0, "", b"again") == b"|again"
    finally:
        client.close()
        await again.stop()
