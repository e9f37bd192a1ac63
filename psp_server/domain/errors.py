"""Domain errors. Each carries a stable UPPER_SNAKE ``reason`` that reaches the client
unchanged as ``google.rpc.ErrorInfo.reason``; ``api/errors.py`` maps the class to a gRPC
status code. docs/errors.md lists every reason."""

from __future__ import annotations


class DomainError(Exception):
    reason = "DOMAIN_ERROR"

    def __init__(self, message: str, *, reason: str | None = None, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = metadata

    def __str__(self) -> str:
        return self.message


class ValidationError(DomainError):
    """Bad input: INVALID_ARGUMENT."""

    reason = "INVALID_ARGUMENT"


class NotFound(DomainError):
    reason = "NOT_FOUND"


class PreconditionFailed(DomainError):
    """The request is well formed but the state forbids it: FAILED_PRECONDITION."""

    reason = "FAILED_PRECONDITION"


class InvalidTransition(PreconditionFailed):
    reason = "INVALID_TRANSITION"


class InsufficientFunds(PreconditionFailed):
    reason = "INSUFFICIENT_FUNDS"


class LimitExceeded(PreconditionFailed):
    reason = "LIMIT_EXCEEDED"


class IdempotencyKeyReused(DomainError):
    """Same idempotency key, different request: ALREADY_EXISTS."""

    reason = "IDEMPOTENCY_KEY_REUSED"


class Conflict(DomainError):
    """A unique thing exists already (e-mail taken): ALREADY_EXISTS."""

    reason = "ALREADY_EXISTS"


class Unauthenticated(DomainError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    reason = "PERMISSION_DENIED"


class Throttled(DomainError):
    """Too many attempts: RESOURCE_EXHAUSTED."""

    reason = "THROTTLED"


class Unavailable(DomainError):
    """A dependency (the card network) is down: UNAVAILABLE."""

    reason = "UNAVAILABLE"


class NotImplementedYet(DomainError):
    reason = "NOT_IMPLEMENTED"
