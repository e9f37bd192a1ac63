"""Which gRPC status a failure that is not a domain error gets: a database that cannot be
reached is UNAVAILABLE (retry with the same idempotency key), a bug stays INTERNAL."""

from __future__ import annotations

import sqlite3

import grpc
import psycopg
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from psp_server.api.errors import status_for

UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
INTERNAL = (grpc.StatusCode.INTERNAL, "INTERNAL")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (psycopg.OperationalError("the connection is lost"), UNAVAILABLE),
        (psycopg.errors.AdminShutdown("terminating connection"), UNAVAILABLE),
        (
            OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed")),
            UNAVAILABLE,
        ),
        (sqlite3.OperationalError("database is locked"), UNAVAILABLE),
        (sqlite3.OperationalError("no such table: payments"), INTERNAL),
        (psycopg.errors.UniqueViolation("duplicate key"), INTERNAL),
        (IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE")), INTERNAL),
        (ValueError("a bug"), INTERNAL),
    ],
)
def test_status_for_failures_that_are_not_domain_errors(
    exc: BaseException, expected: tuple[grpc.StatusCode, str]
) -> None:
    code, reason, message, _ = status_for(exc)
    assert (code, reason) == expected
    assert message


def test_a_dropped_connection_found_by_sqlalchemy_is_unavailable() -> None:
    exc = OperationalError("SELECT 1", {}, ValueError("whatever the driver said"))
    exc.connection_invalidated = True
    assert status_for(exc)[:2] == UNAVAILABLE
