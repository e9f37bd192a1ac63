"""Core and gateways: one process owns the database, others speak gRPC.

``scanpay psp serve --gateways N`` splits the server in two kinds of process. The *core*
runs every use case: it owns the database writer, so all payments of the deployment share
its group commits (one fsync for many), and no other process's commits throw its page
cache away. The *gateways* hold the clients' connections: HTTP/2, gRPC framing, health,
reflection, the merchants' ``WatchPayments`` streams and the calls that only read
(``api.server.GATEWAY_READS``). A gateway hands every other unary call to the core as it
arrived (the request's bytes and its ``authorization`` header) over a Unix socket, and
answers with the bytes or the status the core sent back. The servicers
are the same code in both layouts; in the core they see a context that holds the caller's
credentials and turns an abort into the status sent back.

The core answers its gateways' events too: every event it commits goes to each gateway
the moment the commit is done, so a stream there yields it without reading the log.

Wire format, both directions: frames of a 4-byte big-endian length and then the body.

- gateway -> core, a call: ``u32 call id, u16 method, u16 len(auth), auth, request``
- core -> gateway, a reply: ``u32 call id, u8 0, response`` or
  ``u32 call id, u8 1, u8 code, u32 len(details), details, status details`` (the
  ``grpc-status-details-bin`` bytes: a ``google.rpc.Status`` with its ``ErrorInfo``)
- core -> gateway, an event: ``u32 0, u8 2, u16 len(merchant id), merchant id, u64 seq,
  the PaymentEvent``'s bytes``

Call ids start at 1; id 0 marks an event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from psp_server.api import errors

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
_CALL = struct.Struct(">IHH")
_REPLY = struct.Struct(">IB")
_ERROR = struct.Struct(">BI")
_EVENT = struct.Struct(">IBH")
_SEQ = struct.Struct(">Q")
OK, ERROR, EVENT = 0, 1, 2
# A frame larger than this is a broken peer, not a request (gRPC takes at most 1 MiB).
MAX_FRAME = 4 << 20
_DETAILS_KEY = "grpc-status-details-bin"

Handler = Callable[[bytes, Any], Awaitable[Any]]
EventSink = Callable[[str, int, bytes], None]


def unary_methods(services: Iterable[ServiceDescriptor]) -> list[MethodDescriptor]:
    """The methods a gateway forwards, in an order both sides compute alike."""
    return [m for s in services for m in s.methods if not m.server_streaming]


class _Status(
    collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status
):
    pass


class Aborted(grpc.aio.AbortError):
    """An abort in the core: ends the call with ``status`` (the servicers' error wrapper
    lets it through, as it does grpc's own AbortError)."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


class CallContext:
    """The part of ``grpc.aio.ServicerContext`` the servicers use, for a forwarded call."""

    __slots__ = ("_metadata",)

    def __init__(self, authorization: str) -> None:
        self._metadata = (("authorization", authorization),) if authorization else ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def abort_with_status(self, status: grpc.Status) -> None:
        raise Aborted(status)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        raise Aborted(_Status(code, details, tuple(trailing_metadata)))


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def _encode_status(status: grpc.Status) -> bytes:
    details = (status.details or "").encode()
    extra = b""
    for key, value in status.trailing_metadata or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            extra = value
    return _ERROR.pack(status.code.value[0], len(details)) + details + extra


def _decode_status(body: memoryview) -> grpc.Status:
    code, n = _ERROR.unpack_from(body)
    details = bytes(body[_ERROR.size : _ERROR.size + n]).decode()
    extra = bytes(body[_ERROR.size + n :])
    trailing = ((_DETAILS_KEY, extra),) if extra else ()
    return _Status(_CODES.get(code, grpc.StatusCode.UNKNOWN), details, trailing)


class _Framed(asyncio.Protocol):
    """Length-prefixed frames in; frames out, written together once per loop turn."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        view = memoryview(buf)
        try:
            while end - pos >= 4:
                (n,) = _LEN.unpack_from(buf, pos)
                if n > MAX_FRAME:
                    log.error("relay: a %d-byte frame; dropping the connection", n)
                    assert self._transport is not None
                    self._transport.abort()
                    return
                if end - pos - 4 < n:
                    break
                self.frame_received(view[pos + 4 : pos + 4 + n])
                pos += 4 + n
        finally:
            view.release()
        if pos:
            del buf[:pos]

    def frame_received(self, frame: memoryview) -> None:
        raise NotImplementedError

    def send(self, *parts: bytes) -> None:
        size = sum(len(p) for p in parts)
        self._out.append(_LEN.pack(size))
        self._out.extend(parts)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))


# -- the core ------------------------------------------------------------------------


class _CoreSide(_Framed):
    def __init__(self, core: RelayCore) -> None:
        super().__init__()
        self._core = core
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._core._gateways.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._core._gateways.discard(self)
        self._transport = None

    def frame_received(self, frame: memoryview) -> None:
        call_id, method, n = _CALL.unpack_from(frame)
        start = _CALL.size
        auth = bytes(frame[start : start + n]).decode("utf-8", "replace")
        body = bytes(frame[start + n :])
        task = asyncio.get_running_loop().create_task(self._call(call_id, method, auth, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, call_id: int, method: int, auth: str, body: bytes) -> None:
        handlers = self._core.handlers
        try:
            if not 0 <= method < len(handlers):
                raise Aborted(errors.UNKNOWN_METHOD)
            response = await handlers[method](body, CallContext(auth))
            data = response if type(response) is bytes else response.SerializeToString()
            self.send(_REPLY.pack(call_id, OK), data)
        except Aborted as exc:
            self.send(_REPLY.pack(call_id, ERROR), _encode_status(exc.status))
        except Exception as exc:
            # The servicers map every error themselves: this is a bug (INTERNAL, logged).
            self.send(_REPLY.pack(call_id, ERROR), _encode_status(errors.status_of(exc)))

    def event(self, merchant_id: bytes, seq: int, data: bytes) -> None:
        self.send(_EVENT.pack(0, EVENT, len(merchant_id)), merchant_id, _SEQ.pack(seq), data)


class RelayCore:
    """The core's end: serves the gateways' calls on a Unix socket."""

    def __init__(self, handlers: list[Handler]) -> None:
        self.handlers = handlers
        self._gateways: set[_CoreSide] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, path: str) -> None:
        """Listen on ``path``: a file, or ``@name`` for Linux's abstract namespace."""
        address = _address(path)
        if not address.startswith("\0"):
            # A socket file left by an earlier run (a restart on the same data directory).
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(address).st_mode):
                    os.unlink(address)
        # The socket made here: uvloop takes no abstract address itself.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _CoreSide(self), sock=sock)

    def publish(self, merchant_id: str, seq: int, data: bytes) -> None:
        """A committed event, to every gateway (on the loop)."""
        mid = merchant_id.encode()
        for gw in list(self._gateways):
            gw.event(mid, seq, data)

    def connected(self) -> int:
        return len(self._gateways)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for gw in list(self._gateways):
                if gw._transport is not None:
                    gw._transport.close()
            await self._server.wait_closed()


# -- a gateway -----------------------------------------------------------------------


class _GatewaySide(_Framed):
    def __init__(self, client: RelayClient) -> None:
        super().__init__()
        self._client = client

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._client._lost(exc)

    def frame_received(self, frame: memoryview) -> None:
        call_id, kind = _REPLY.unpack_from(frame)
        if kind == EVENT:
            _, _, n = _EVENT.unpack_from(frame)
            start = _EVENT.size
            merchant_id = bytes(frame[start : start + n]).decode()
            (seq,) = _SEQ.unpack_from(frame, start + n)
            sink = self._client.on_event
            if sink is not None:
                sink(merchant_id, seq, bytes(frame[start + n + _SEQ.size :]))
            return
        fut = self._client._pending.pop(call_id, None)
        if fut is None or fut.done():
            return  # the caller gave up (cancelled)
        body = frame[_REPLY.size :]
        if kind == OK:
            fut.set_result(bytes(body))
        else:
            fut.set_exception(Aborted(_decode_status(body)))


class RelayClient:
    """A gateway's end: one connection to the core, many calls in flight on it."""

    def __init__(self, on_event: EventSink | None = None) -> None:
        self.on_event = on_event
        self._side: _GatewaySide | None = None
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next = 0
        self._closed = asyncio.Event()

    async def connect(self, path: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(_address(path))  # local: no waiting
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        _, side = await loop.create_unix_connection(lambda: _GatewaySide(self), sock=sock)
        self._side = side

    @property
    def closed(self) -> asyncio.Event:
        """Set when the connection to the core is gone."""
        return self._closed

    def call(self, method: int, authorization: str, request: bytes) -> asyncio.Future[bytes]:
        """The core's response bytes, or ``Aborted`` with its status."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        side = self._side
        if side is None:
            fut.set_exception(Aborted(errors.CORE_UNAVAILABLE))
            return fut
        self._next = self._next % 0xFFFFFFFF + 1
        call_id = self._next
        self._pending[call_id] = fut
        auth = authorization.encode()
        if len(auth) > 0xFFFF:
            # Longer than any credential (grpc caps metadata at 8 KiB by default): sent as
            # none, so the core answers UNAUTHENTICATED like for a missing one.
            auth = b""
        side.send(_CALL.pack(call_id, method, len(auth)), auth, request)
        return fut

    def _lost(self, exc: Exception | None) -> None:
        self._side = None
        pending, self._pending = self._pending, {}
        if pending:
            log.error("relay: lost the core with %d call(s) in flight", len(pending))
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(Aborted(errors.CORE_UNAVAILABLE))
        self._closed.set()

    def close(self) -> None:
        if self._side is not None and self._side._transport is not None:
            self._side._transport.close()


def _address(path: str) -> str:
    """``@name`` is the abstract socket ``name``, whose address starts with a NUL byte
    (which cannot travel on a command line)."""
    return "\0" + path[1:] if path.startswith("@") else path


def forwarder(client: RelayClient, method: int) -> Callable[[bytes, Any], Awaitable[bytes]]:
    """A gateway's handler for one unary method: the call goes to the core as it came."""

    async def forward(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        auth = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                auth = value if isinstance(value, str) else value.decode("latin-1")
                break
        try:
            return await client.call(method, auth, raw)
        except Aborted as exc:
            await context.abort_with_status(exc.status)
            raise  # unreachable: abort_with_status raises

    return forward
