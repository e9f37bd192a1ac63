"""The ISO 8583 dialect (pyiso8583 with our spec), framing, and the clearing arithmetic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from psp_server.cardnet import spec
from psp_server.cardnet.framing import FrameError, frame, read_frame
from psp_server.cardnet.issuers import (
    TEST_CARDS,
    Behaviour,
    Funding,
    account_for,
    decide_debit,
    route,
)
from psp_server.cardnet.settlement import (
    COLUMNS,
    Cleared,
    bps_of,
    chargeback_fee,
    clear,
    fixed_scheme_fee,
    parse_csv,
    render_csv,
)
from psp_server.cardnet.spec import (
    ChargebackRecord,
    MessageFormatError,
    OriginalData,
    decode,
    decode_chargebacks,
    encode,
    encode_chargebacks,
)
from psp_server.domain.cards import luhn_ok

AUTH = {
    "t": "0100",
    "3": "000000",
    "4": "000000001250",
    "7": "0615120000",
    "11": "000123",
    "22": "902",
    "25": "00",
    "32": "123456",
    "35": "4111111111111111=3012101000",
    "41": "trm_01JD3ABCDEF",
    "42": "mer_01JD3ABCDEF",
    "48": "order 42, table 7",
    "49": "978",
}

SAMPLES = [
    AUTH,
    {**AUTH, "t": "0110", "37": "0107A2312C50", "38": "314025", "39": "00", "44": "approved"},
    {**AUTH, "t": "0200", "3": "200000", "56": "0107A2312C50"},
    {
        "t": "0220",
        "3": "000000",
        "4": "000000001000",
        "7": "0615120500",
        "11": "000124",
        "32": "123456",
        "41": "trm_1",
        "42": "mer_1",
        "49": "978",
        "90": OriginalData("0100", "000123", "0615120000", "123456").encode(),
    },
    {
        "t": "0510",
        "7": "0615230000",
        "11": "000200",
        "15": "0616",
        "32": "123456",
        "39": "00",
        "42": "mer_1",
        "62": "20260615-000001",
        "63": encode_chargebacks([ChargebackRecord("0107A2312C50", 5000, "978", "FR01")]),
        "74": "0000000001",
        "76": "0000000003",
        "86": "0000000000000500",
        "88": "0000000000012345",
    },
    {"t": "0800", "7": "0615120000", "11": "000001", "70": "301"},
]


@pytest.mark.parametrize("msg", SAMPLES, ids=[m["t"] for m in SAMPLES])
def test_round_trip(msg: dict[str, str]) -> None:
    before = dict(msg)
    raw = encode(msg)
    assert msg == before  # encode does not touch its argument
    assert raw[:4] == msg["t"].encode()
    assert decode(raw) == msg


def test_secondary_bitmap_only_when_needed() -> None:
    short = encode(AUTH)
    assert short[4] & 0x80 == 0  # no field 65..128: no secondary bitmap
    long = encode(SAMPLES[3])
    assert long[4] & 0x80 == 0x80


def test_wire_layout_of_an_echo() -> None:
    raw = encode({"t": "0800", "7": "0615120000", "11": "000001", "70": "301"})
    # MTI, primary bitmap (fields 1, 7, 11), secondary bitmap (field 70), then the fields
    assert raw == (
        b"0800"
        + bytes.fromhex("8220000000000000")
        + bytes.fromhex("0400000000000000")
        + b"0615120000000001301"
    )


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({**AUTH, "4": "12.50"}, "4"),
        ({**AUTH, "4": "1250"}, "4"),  # fixed length
        ({**AUTH, "11": "12345a"}, "11"),
        ({**AUTH, "2": "4111 1111"}, "2"),
        ({**AUTH, "37": "ABC-12345678"}, "37"),
        ({**AUTH, "48": "caf\u00e9"}, "48"),
        ({**AUTH, "48": "x" * 256}, "48"),
        ({**AUTH, "5": "000000000001"}, "5"),  # not in this dialect
        ({**AUTH, "t": "01X0"}, "t"),
    ],
)
def test_encode_rejects_bad_fields(bad: dict[str, str], field: str) -> None:
    with pytest.raises(MessageFormatError) as info:
        encode(bad)
    assert info.value.field == field


def test_decode_rejects_garbage() -> None:
    raw = encode(AUTH)
    for data in (raw[:-1], raw + b"x", b"0100", b"", b"\x00" * 12):
        with pytest.raises(MessageFormatError):
            decode(data)
    # a bit for a field the dialect does not have
    bad_bitmap = raw[:4] + bytes([raw[4] | 0x08]) + raw[5:]  # field 5
    with pytest.raises(MessageFormatError):
        decode(bad_bitmap)
    # digits field holding letters is caught on decode too
    tampered = bytearray(raw)
    i = raw.index(b"000000001250")
    tampered[i] = ord("X")
    with pytest.raises(MessageFormatError) as info:
        decode(bytes(tampered))
    assert info.value.field == "4"


def test_response_mti() -> None:
    assert [spec.response_mti(m) for m in ("0100", "0200", "0220", "0400", "0500", "0800")] == [
        "0110",
        "0210",
        "0230",
        "0410",
        "0510",
        "0810",
    ]
    with pytest.raises(MessageFormatError):
        spec.response_mti("0110")


def test_original_data_and_transmission_time() -> None:
    at = datetime(2026, 6, 15, 14, 3, 9, tzinfo=UTC)
    f7 = spec.transmission_time(at)
    assert f7 == "0615140309"
    od = OriginalData("0100", "000123", f7, "123456")
    value = od.encode()
    assert len(value) == 42 and value.startswith("01000001230615140309000001234560")
    assert OriginalData.parse(value) == od
    with pytest.raises(MessageFormatError):
        OriginalData.parse("0100")


@given(
    st.lists(
        st.tuples(
            st.text("0123456789ABCDEF", min_size=12, max_size=12),
            st.integers(min_value=0, max_value=10**12 - 1),
            st.sampled_from(["978", "840", "392"]),
        ),
        max_size=20,
    )
)
def test_chargeback_records_round_trip(items: list[tuple[str, int, str]]) -> None:
    records = [ChargebackRecord(n, a, c, "FR01") for n, a, c in items]
    assert decode_chargebacks(encode_chargebacks(records)) == records


@given(
    stan=st.integers(min_value=0, max_value=999_999),
    amount=st.integers(min_value=0, max_value=10**12 - 1),
    terminal=st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=32),
    reference=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=255),
    pan=st.text("0123456789", min_size=12, max_size=19),
)
def test_generated_messages_round_trip(
    stan: int, amount: int, terminal: str, reference: str, pan: str
) -> None:
    msg = {
        "t": "0200",
        "2": pan,
        "3": "000000",
        "4": spec.amount_field(amount),
        "7": "1231235959",
        "11": f"{stan:06d}",
        "32": "1",
        "41": terminal,
        "42": "m",
        "49": "978",
    }
    if reference:
        msg["48"] = reference
    assert decode(encode(msg)) == msg


def test_masked_for_logs() -> None:
    shown = spec.masked({**AUTH, "2": "4111111111111111"})
    assert shown["2"] == "411111******1111"
    assert "4111111111111111" not in shown["35"]


# --- framing --------------------------------------------------------------------------------


async def test_framing() -> None:
    reader = asyncio.StreamReader()
    payload = encode(AUTH)
    reader.feed_data(frame(payload) + frame(b"x"))
    reader.feed_eof()
    assert await read_frame(reader) == payload
    assert await read_frame(reader) == b"x"
    assert await read_frame(reader) is None
    assert frame(b"ab") == b"\x00\x02ab"
    with pytest.raises(FrameError):
        frame(b"")
    with pytest.raises(FrameError):
        frame(b"x" * 70_000)


async def test_framing_truncated() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"\x00\x05abc")
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError):
        await read_frame(reader)
    zero = asyncio.StreamReader()
    zero.feed_data(b"\x00\x00")
    with pytest.raises(FrameError):
        await read_frame(zero)


# --- issuers --------------------------------------------------------------------------------


def test_test_cards_route_and_are_luhn_valid() -> None:
    for pan, account in TEST_CARDS.items():
        assert luhn_ok(pan), pan
        assert route(pan) is not None, pan
        assert account_for(pan) is account
    assert route("4000000000000002").issuer_id == "400000"  # type: ignore[union-attr]
    assert route("4111111111111111").issuer_id == "411111"  # type: ignore[union-attr]
    assert route("2221000000000009").issuer_id == "555555"  # type: ignore[union-attr]
    assert route("3530111333300000") is None  # JCB: no simulated issuer
    assert account_for("4111111111111112") is None
    assert account_for("4012888888881881").behaviour is Behaviour.APPROVE  # type: ignore[union-attr]


def test_issuer_decisions() -> None:
    ok = TEST_CARDS["4111111111111111"]
    assert decide_debit(ok, 100, 1000, card_expired=False) == "00"
    assert decide_debit(ok, 1001, 1000, card_expired=False) == "51"
    assert decide_debit(ok, 0, 1000, card_expired=False) == "13"
    assert decide_debit(ok, 100, 1000, card_expired=True) == "54"
    expected = {
        "4000000000000002": "05",
        "4000000000009995": "51",
        "4000000000000069": "54",
        "4000000000009987": "41",
        "4000000000009979": "43",
    }
    for pan, code in expected.items():
        assert decide_debit(TEST_CARDS[pan], 100, 10**9, card_expired=False) == code


# --- clearing arithmetic --------------------------------------------------------------------


def test_rates_and_rounding() -> None:
    assert bps_of(10_000, 30) == 30
    assert bps_of(5000, 5) == 3  # 2.5 rounds half up
    assert bps_of(4999, 5) == 2
    assert bps_of(0, 30) == 0
    assert (fixed_scheme_fee("EUR"), fixed_scheme_fee("JPY"), fixed_scheme_fee("KWD")) == (2, 0, 20)
    assert (chargeback_fee("EUR"), chargeback_fee("JPY")) == (1500, 15)


def test_clearing_rows() -> None:
    items = [
        Cleared("N1", "order-1", "payment", 10_000, "EUR", Funding.CREDIT, False),
        Cleared("N2", "order-2", "payment", 10_000, "EUR", Funding.DEBIT, False),
        Cleared("N3", "order-1", "refund", 2_500, "EUR", Funding.CREDIT, False),
        Cleared("N4", "order-4", "payment", 5_000, "EUR", Funding.CREDIT, True),
    ]
    rows = clear(items, batch_id="B1", merchant_id="mer_1", settlement_date="2026-06-16")
    got = [
        (r.network_transaction_id, r.type, r.gross, r.interchange, r.scheme_fee, r.net)
        for r in rows
    ]
    assert got == [
        ("N1", "payment", 10_000, 30, 7, 9_963),
        ("N2", "payment", 10_000, 20, 7, 9_973),
        ("N3", "refund", -2_500, 0, 3, -2_503),
        ("N4", "payment", 5_000, 15, 5, 4_980),
        ("N4", "chargeback", -5_000, -15, 0, -4_985),
        ("N4", "fee", 0, 0, 1_500, -1_500),
    ]
    for r in rows:
        assert r.gross - r.interchange - r.scheme_fee == r.net


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=10**10),
            st.sampled_from(["payment", "refund"]),
            st.sampled_from(list(Funding)),
            st.booleans(),
            st.sampled_from(["EUR", "JPY", "KWD", "USD"]),
        ),
        max_size=30,
    )
)
def test_every_row_adds_up_and_csv_round_trips(
    items: list[tuple[int, str, Funding, bool, str]],
) -> None:
    cleared = [
        Cleared(
            f"N{i:011d}", f"ref,{i}", kind, amount, cur, funding, disputed and kind == "payment"
        )
        for i, (amount, kind, funding, disputed, cur) in enumerate(items)
    ]
    rows = clear(cleared, batch_id="B", merchant_id="m", settlement_date="2026-06-16")
    for r in rows:
        assert r.gross - r.interchange - r.scheme_fee == r.net
        assert r.interchange >= 0 or r.type == "chargeback"
    text = render_csv(rows)
    assert text.splitlines()[0] == ",".join(COLUMNS)
    assert parse_csv(text) == rows
