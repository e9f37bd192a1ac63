"""Who is calling: terminal API keys and consumer access tokens from the
``authorization: Bearer ...`` metadata."""

from __future__ import annotations

import time
from typing import Any

import grpc

from psp_server.domain.errors import Unauthenticated
from psp_server.service import auth
from psp_server.service.runtime import Database

_KEY_CACHE_TTL = 60.0


def bearer(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            v = value if isinstance(value, str) else value.decode(errors="replace")
            if v.startswith("Bearer "):
                return v[7:].strip()
            raise Unauthenticated(
                "authorization metadata must be 'Bearer <credential>'", reason="INVALID_AUTH_HEADER"
            )
    raise Unauthenticated("missing authorization metadata", reason="MISSING_CREDENTIALS")


class ApiKeys:
    """Verifies terminal API keys; remembers good ones for a minute."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[str, tuple[float, auth.MerchantPrincipal]] = {}

    async def principal(
        self, context: grpc.aio.ServicerContext[Any, Any]
    ) -> auth.MerchantPrincipal:
        key = bearer(context)
        digest = auth.sha256_hex(key)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        prefix = auth.api_key_prefix(key)
        if prefix is None:
            raise Unauthenticated("invalid API key", reason="INVALID_API_KEY")
        term = await self._db.read(lambda s: s.get_terminal_by_prefix(prefix))
        if term is None or term.revoked_at is not None or not auth.check_hash(key, term.key_hash):
            raise Unauthenticated("invalid API key", reason="INVALID_API_KEY")
        who = auth.MerchantPrincipal(term.merchant_id, term.id, term.label)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + _KEY_CACHE_TTL, who)
        return who
