"""The one place where domain errors become gRPC statuses, each with a
``google.rpc.ErrorInfo`` carrying the stable reason."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from psp_server.adapters.db import WriterStopped, database_unavailable
from psp_server.domain import errors as e
from psp_server.domain.money import MoneyError

log = logging.getLogger(__name__)

DOMAIN = "scanpay"

_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (e.ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.IdempotencyKeyReused, grpc.StatusCode.ALREADY_EXISTS),
    (e.Conflict, grpc.StatusCode.ALREADY_EXISTS),
    (e.PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (e.Throttled, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (e.NotImplementedYet, grpc.StatusCode.UNIMPLEMENTED),
]


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, str, dict[str, str]]:
    if isinstance(exc, e.DomainError):
        for cls, code in _CODES:
            if isinstance(exc, cls):
                return code, exc.reason, exc.message, dict(exc.metadata)
        return grpc.StatusCode.FAILED_PRECONDITION, exc.reason, exc.message, dict(exc.metadata)
    if isinstance(exc, MoneyError):
        return grpc.StatusCode.INVALID_ARGUMENT, exc.reason, str(exc), {}
    if isinstance(exc, WriterStopped):
        return grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", "the server is shutting down", {}
    if database_unavailable(exc):
        return (
            grpc.StatusCode.UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
            "the database cannot be reached just now; try again with the same idempotency key",
            {},
        )
    return grpc.StatusCode.INTERNAL, "INTERNAL", "internal error; it has been logged", {}


def to_rpc_status(
    code: grpc.StatusCode, reason: str, message: str, metadata: dict[str, str]
) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=[detail])
    )
    return status


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    await context.abort_with_status(status_of(exc))


F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
    """Wrap a servicer method (unary coroutine or server-streaming async generator)."""
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def stream(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in fn(self, request, context):
                    yield item
            except (e.DomainError, MoneyError, WriterStopped) as exc:
                await abort(context, exc)
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await abort(context, exc)

        return cast(F, stream)

    @functools.wraps(fn)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc)

    return cast(F, unary)


MALFORMED = to_rpc_status(
    grpc.StatusCode.INVALID_ARGUMENT,
    "MALFORMED_REQUEST",
    "the request is not a valid protobuf message of this method's type",
    {},
)


# psp serve --gateways (api/relay.py): the gateway lost the core, and the core was sent
# a method it does not have (a gateway of another version).
CORE_UNAVAILABLE = to_rpc_status(
    grpc.StatusCode.UNAVAILABLE,
    "CORE_UNAVAILABLE",
    "the payment core is not reachable; try again with the same idempotency key",
    {},
)
UNKNOWN_METHOD = to_rpc_status(
    grpc.StatusCode.UNIMPLEMENTED,
    "UNKNOWN_METHOD",
    "the payment core does not know this method (gateway and core of different versions?)",
    {},
)


def status_of(exc: BaseException) -> grpc.Status:
    """The status an error ends a call with (logged when it is a bug)."""
    code, reason, message, metadata = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("unexpected error", exc_info=exc)
    return to_rpc_status(code, reason, message, metadata)


def tolerant_unary(
    fn: Callable[[Any, Any], Any], decode: Callable[[bytes], Any]
) -> Callable[[bytes, Any], Any]:
    """A unary handler that parses its own request: a body that is not a valid message of
    the method's type (corrupt wire format, invalid UTF-8 in a string field) gets
    INVALID_ARGUMENT ``MALFORMED_REQUEST``, where grpc itself would answer UNKNOWN."""

    async def unary(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            request = decode(raw)
        except Exception:
            await context.abort_with_status(MALFORMED)
        return await fn(request, context)

    return unary


def tolerant_stream(
    fn: Callable[[Any, Any], AsyncIterator[Any]], decode: Callable[[bytes], Any]
) -> Callable[[bytes, Any], AsyncIterator[Any]]:
    async def stream(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            request = decode(raw)
        except Exception:
            await context.abort_with_status(MALFORMED)
        async for item in fn(request, context):
            yield item

    return stream
