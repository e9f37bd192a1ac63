from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from psp_server.domain import ids


@given(st.integers(0, 2**48 - 1), st.integers(0, 2**48 - 1))
def test_ids_sort_by_creation_time(a: int, b: int) -> None:
    x, y = ids.new_id("pay", a), ids.new_id("pay", b)
    assert ids.looks_like("pay", x) and ids.looks_like("pay", y)
    if a < b:
        assert x < y


def test_tokens_are_qr_alphanumeric_base32() -> None:
    for n in (8, 20):
        t = ids.new_token(n)
        assert len(t) == n
        assert set(t) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert len({ids.new_token() for _ in range(1000)}) == 1000
