"""Card reading (ISO/IEC 7813 tracks as a keyboard-wedge reader types them), Luhn, expiry,
brands, masking, and the PAN vault."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from psp_server.adapters.pan_vault import PanVault, PanVaultError, pan_fingerprint
from psp_server.cli.card import describe
from psp_server.domain.cards import (
    CARD_EXPIRED,
    CARD_LUHN_FAILED,
    CARD_READ_ERROR,
    CARD_TRACK_MISMATCH,
    CARD_UNSUPPORTED,
    CardBrand,
    CardError,
    brand_of,
    cardholder_name,
    format_track1,
    format_track2,
    is_expired,
    luhn_check_digit,
    luhn_ok,
    mask_pan,
    parse_swipe,
    read_swipe,
    response_code,
    track_lrc,
    validate_swipe,
)

PAN = "4111111111111111"
T1 = format_track1(PAN, "DOE/JANE Q.MRS", "3012", "101", "0000000")
T2 = format_track2(PAN, "3012", "101", "00000")
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def reason_of(data: str, now: datetime = NOW) -> str:
    with pytest.raises(CardError) as info:
        parse_swipe(data, now)
    return info.value.reason


# --- reading: every way a reader types a swipe ----------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        T1 + T2,
        T1 + T2 + "\n",
        T1 + T2 + "\r",
        T1 + "\n" + T2 + "\n",
        T1 + "\r\n" + T2 + "\r\n",
        T1 + track_lrc(T1) + T2 + track_lrc(T2) + "\n",
        T1 + track_lrc(T1) + "\n" + T2 + track_lrc(T2),
        "  " + T1 + T2 + "  \n",
        T1 + T2 + ";E?",  # a failed track 3
        T1 + T2 + "+E?\n",
    ],
)
def test_both_tracks_in_any_reader_layout(data: str) -> None:
    swipe = parse_swipe(data, NOW)
    assert swipe.pan == PAN
    assert swipe.name == "JANE Q DOE"
    assert swipe.expiry_yymm == "3012"
    assert swipe.service_code == "101"
    assert swipe.brand is CardBrand.VISA
    assert swipe.track_numbers == ("1", "2")
    assert swipe.track2_equivalent == f"{PAN}=301210100000"
    assert swipe.tracks == (T1, T2)


@pytest.mark.parametrize("data", [T1, T1 + "\n", T1 + ";E?", T1 + track_lrc(T1) + "\n;E?\n"])
def test_track_1_only(data: str) -> None:
    swipe = parse_swipe(data, NOW)
    assert swipe.track_numbers == ("1",)
    assert swipe.name == "JANE Q DOE"
    assert swipe.track2_equivalent == f"{PAN}=30121010000000"


@pytest.mark.parametrize("data", [T2, T2 + "\n", "%E?" + T2, "%E?\n" + T2 + track_lrc(T2)])
def test_track_2_only(data: str) -> None:
    swipe = parse_swipe(data, NOW)
    assert swipe.track_numbers == ("2",)
    assert swipe.name is None
    assert swipe.pan == PAN


def test_spaces_inside_the_pan() -> None:
    spaced = "4111 1111 1111 1111"
    data = format_track1(spaced, "DOE/JANE", "3012", "101") + f";{spaced}=3012101?\n"
    swipe = parse_swipe(data, NOW)
    assert swipe.pan == PAN
    assert swipe.track_numbers == ("1", "2")


def test_caps_lock_and_d_separator() -> None:
    swipe = parse_swipe(T1.lower() + f";{PAN}D3012101?", NOW)
    assert swipe.pan == PAN
    assert swipe.name == "JANE Q DOE"


@pytest.mark.parametrize(
    "name", [f"DOE/JANE{a}{b}" for a in "AB" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
)
def test_lrc_that_looks_like_a_sentinel(name: str) -> None:
    t1 = format_track1(PAN, name, "3012", "101", "0000")
    swipe = parse_swipe(t1 + track_lrc(t1) + T2 + track_lrc(T2), NOW)
    assert swipe.track_numbers == ("1", "2")


def test_lrc_semicolon_then_track_2() -> None:
    t1 = format_track1(PAN, "DOE/JANEAV", "3012", "101", "0000")
    assert track_lrc(t1) == ";"
    swipe = parse_swipe(t1 + ";" + T2, NOW)
    assert swipe.track_numbers == ("1", "2")
    swipe = parse_swipe(t1 + T2, NOW)  # without LRC, the ';' starts track 2
    assert swipe.track_numbers == ("1", "2")


@pytest.mark.parametrize(
    "data",
    [
        "",
        "\n",
        "%E?;E?\n",
        "%E?",
        ";E?",
        "hello",
        "4111111111111111=3012101",  # no sentinels
        "%B4111111111111111^DOE/JANE?",  # no expiry field
        ";4111111111111111=30?",
        ";41111111111X1111=3012101?",
        ";411111=3012101?",  # too short a PAN
        ";4111111111111111=3013101?",  # month 13
        ";" + "4" * 2000 + "=3012101?",  # far too long for a swipe
    ],
)
def test_bad_swipes_say_swipe_again(data: str) -> None:
    assert reason_of(data) == CARD_READ_ERROR


def test_bad_swipe_message_is_for_the_cashier() -> None:
    with pytest.raises(CardError, match="swipe again"):
        read_swipe("%E?;E?")


def test_wrong_lrc_is_a_read_error() -> None:
    wrong = chr(ord(track_lrc(T2)) ^ 1)
    assert reason_of("%E?" + T2 + wrong) == CARD_READ_ERROR
    # ... but a good track 1 still carries the swipe
    assert parse_swipe(T1 + T2 + wrong, NOW).track_numbers == ("1",)


def test_tracks_that_disagree() -> None:
    other = format_track2("5555555555554444", "3012", "101")
    assert reason_of(T1 + other) == CARD_TRACK_MISMATCH
    later = format_track2(PAN, "3112", "101")
    assert reason_of(T1 + later) == CARD_TRACK_MISMATCH


def test_non_financial_track_1_is_unsupported() -> None:
    assert reason_of("%ASOMETHING ELSE?") == CARD_UNSUPPORTED
    assert parse_swipe("%ASOMETHING ELSE?" + T2, NOW).track_numbers == ("2",)


def test_business_checks() -> None:
    assert reason_of(format_track2("4111111111111112", "3012", "101")) == CARD_LUHN_FAILED
    unknown = "9" + "0" * 14
    unknown += luhn_check_digit(unknown)
    assert reason_of(format_track2(unknown, "3012", "101")) == CARD_UNSUPPORTED
    assert reason_of(format_track2(PAN, "3012", "701")) == CARD_UNSUPPORTED  # private use
    assert reason_of(format_track2(PAN, "3012", "103")) == CARD_UNSUPPORTED  # ATM only
    assert reason_of(format_track2(PAN, "2605", "101")) == CARD_EXPIRED
    swipe = read_swipe(T2)
    with pytest.raises(CardError) as info:
        validate_swipe(swipe, NOW, accepted=frozenset({CardBrand.MASTERCARD}))
    assert info.value.reason == CARD_UNSUPPORTED
    assert swipe.chip_card is False
    assert read_swipe(format_track2(PAN, "3012", "201")).chip_card is True


# --- hypothesis: any well-formed swipe reads back -------------------------------------------

_PREFIXES = ["4", "51", "55", "2221", "2720", "34", "37", "6011", "65", "3528", "62"]


@st.composite
def pans(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(_PREFIXES))
    length = draw(st.integers(min_value=max(13, len(prefix) + 2), max_value=19))
    body = draw(
        st.text("0123456789", min_size=length - 1 - len(prefix), max_size=length - 1 - len(prefix))
    )
    partial = prefix + body
    return partial + luhn_check_digit(partial)


_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ -'"


@given(
    pan=pans(),
    surname=st.text(_NAME_CHARS, min_size=1, max_size=12).filter(lambda s: s.strip()),
    given_name=st.text(_NAME_CHARS, max_size=10),
    year=st.integers(min_value=27, max_value=99),
    month=st.integers(min_value=1, max_value=12),
    service=st.sampled_from(["101", "120", "201", "221", "501", "601"]),
    disc1=st.text("0123456789", max_size=8),
    disc2=st.text("0123456789", max_size=5),
    which=st.sampled_from(["12", "1", "2"]),
    lrc=st.booleans(),
    sep=st.sampled_from(["", "\n", "\r\n", "\r"]),
    end=st.sampled_from(["", "\n", "\r", "\r\n"]),
)
def test_generated_swipes_round_trip(
    pan: str,
    surname: str,
    given_name: str,
    year: int,
    month: int,
    service: str,
    disc1: str,
    disc2: str,
    which: str,
    lrc: bool,
    sep: str,
    end: str,
) -> None:
    yymm = f"{year:02d}{month:02d}"
    raw_name = f"{surname}/{given_name}"
    t1 = format_track1(pan, raw_name, yymm, service, disc1)
    t2 = format_track2(pan, yymm, service, disc2)
    parts = []
    if "1" in which:
        parts.append(t1 + (track_lrc(t1) if lrc else ""))
    if "2" in which:
        parts.append(t2 + (track_lrc(t2) if lrc else ""))
    swipe = parse_swipe(sep.join(parts) + end, NOW)
    assert swipe.pan == pan
    assert swipe.expiry_yymm == yymm
    assert swipe.service_code == service
    assert swipe.track_numbers == tuple(which)
    assert swipe.brand is brand_of(pan) is not CardBrand.UNKNOWN
    if "1" in which:
        assert swipe.name == cardholder_name(raw_name)
    if "2" in which:
        assert swipe.track2_equivalent == f"{pan}={yymm}{service}{disc2}"
    assert pan not in repr(swipe) and pan not in str(swipe)


# --- Luhn -----------------------------------------------------------------------------------


def test_luhn_known_numbers() -> None:
    for pan in ("4111111111111111", "5555555555554444", "378282246310005", "79927398713"):
        assert luhn_ok(pan)
    for pan in ("4111111111111112", "79927398710", "", "4", "41111111111111a1", "٤١١١"):
        assert not luhn_ok(pan)
    assert luhn_check_digit("7992739871") == "3"


@given(st.text("0123456789", min_size=1, max_size=18), st.integers(min_value=0, max_value=17))
def test_luhn_detects_any_single_digit_change(partial: str, where: int) -> None:
    pan = partial + luhn_check_digit(partial)
    assert luhn_ok(pan)
    i = where % len(pan)
    changed = pan[:i] + str((int(pan[i]) + 1) % 10) + pan[i + 1 :]
    assert not luhn_ok(changed)


# --- expiry ---------------------------------------------------------------------------------


def test_card_valid_through_the_end_of_its_month() -> None:
    last_instant = datetime(2030, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert not is_expired("3012", last_instant)
    assert is_expired("3012", last_instant + timedelta(microseconds=1))
    assert not is_expired("3002", datetime(2030, 2, 28, 23, 0, tzinfo=UTC))
    assert is_expired("3002", datetime(2030, 3, 1, tzinfo=UTC))
    # judged in the zone of the clock given
    tokyo = timezone(timedelta(hours=9))
    assert is_expired("3012", datetime(2031, 1, 1, 0, 30, tzinfo=tokyo))
    with pytest.raises(ValueError):
        is_expired("3013", NOW)


def test_expired_swipe_reason() -> None:
    swipe = read_swipe(format_track2(PAN, "2605", "101"))
    assert validate_swipe(swipe, datetime(2026, 5, 31, 23, 59, tzinfo=UTC)) is swipe
    with pytest.raises(CardError, match="card expired") as info:
        validate_swipe(swipe, datetime(2026, 6, 1, tzinfo=UTC))
    assert info.value.reason == CARD_EXPIRED


# --- brands, masking, names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pan", "brand"),
    [
        ("4111111111111111", CardBrand.VISA),
        ("4000000000000002", CardBrand.VISA),
        ("5105105105105100", CardBrand.MASTERCARD),
        ("5555555555554444", CardBrand.MASTERCARD),
        ("2221000000000009", CardBrand.MASTERCARD),
        ("2720999999999996", CardBrand.MASTERCARD),
        ("2220999999999999", CardBrand.UNKNOWN),
        ("2721000000000000", CardBrand.UNKNOWN),
        ("378282246310005", CardBrand.AMEX),
        ("341111111111111", CardBrand.AMEX),
        ("6011111111111117", CardBrand.DISCOVER),
        ("6445644564456445", CardBrand.DISCOVER),
        ("6500000000000002", CardBrand.DISCOVER),
        ("3530111333300000", CardBrand.JCB),
        ("6200000000000005", CardBrand.UNIONPAY),
        ("6221260000000000", CardBrand.UNIONPAY),
        ("6759649826438453", CardBrand.MAESTRO),
        ("5018000000000009", CardBrand.MAESTRO),
        ("36227206271667", CardBrand.DINERS),
        ("30569309025904", CardBrand.DINERS),
        ("2200000000000004", CardBrand.MIR),
        ("9999999999999995", CardBrand.UNKNOWN),
        ("", CardBrand.UNKNOWN),
    ],
)
def test_brand_from_bin(pan: str, brand: CardBrand) -> None:
    assert brand_of(pan) is brand


def test_masking_first_six_last_four() -> None:
    assert mask_pan("4111111111111111") == "411111******1111"
    assert mask_pan("378282246310005") == "378282*****0005"
    assert mask_pan("4000000000000000006") == "400000*********0006"
    assert mask_pan("12345") == "*2345"  # too short to be a PAN: never more than 4 shown
    swipe = read_swipe(T1 + T2)
    assert (swipe.masked, swipe.last4, swipe.bin6) == ("411111******1111", "1111", "411111")


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("DOE/JANE", "JANE DOE"),
        ("DOE/JANE Q.MRS", "JANE Q DOE"),
        ("  SMITH  /  JOHN  ", "JOHN SMITH"),
        ("DOE/", "DOE"),
        ("CARDHOLDER", "CARDHOLDER"),
        ("", None),
        ("   ", None),
        ("/", None),
    ],
)
def test_cardholder_name(raw: str, name: str | None) -> None:
    assert cardholder_name(raw) == name


def test_nothing_shows_the_pan_or_tracks() -> None:
    swipe = read_swipe(T1 + T2)
    for text in (repr(swipe), str(swipe), f"{swipe}", repr([swipe])):
        assert PAN not in text
        assert "DOE" not in text
        assert "411111******1111" in text
    errors = []
    for data in (
        T1 + format_track2("5555555555554444", "3012", "101"),
        ";4111111111111112=3012101?",
    ):
        with pytest.raises(CardError) as info:
            parse_swipe(data, NOW)
        errors.append(info.value)
    for err in errors:
        assert PAN not in str(err) and PAN not in repr(err)
        assert "4111111111111112" not in str(err)


def test_response_codes() -> None:
    assert response_code("00").approved
    assert response_code("51").reason == "CARD_INSUFFICIENT_FUNDS"
    assert response_code("54").reason == CARD_EXPIRED
    assert response_code("41").reason == "CARD_LOST"
    assert response_code("43").reason == "CARD_STOLEN"
    assert response_code("05").reason == "CARD_DECLINED"
    odd = response_code("Q7")
    assert not odd.approved and odd.reason == "CARD_DECLINED"


# --- scanpay card parse ---------------------------------------------------------------------


def test_cli_describe_valid_and_invalid() -> None:
    ok = describe(T1 + T2 + "\n", NOW)
    assert ok == {
        "valid": True,
        "error": None,
        "reason": None,
        "pan_masked": "411111******1111",
        "last4": "1111",
        "brand": "visa",
        "name": "JANE Q DOE",
        "expiry": "3012",
        "service_code": "101",
        "luhn_ok": True,
        "tracks": ["1", "2"],
    }
    expired = describe(format_track2(PAN, "2001", "101"), NOW)
    assert expired["valid"] is False and expired["reason"] == CARD_EXPIRED
    assert expired["pan_masked"] == "411111******1111" and expired["tracks"] == ["2"]
    bad = describe("%E?;E?", NOW)
    assert bad["reason"] == CARD_READ_ERROR and bad["pan_masked"] is None
    luhn = describe(";4111111111111112=3012101?", NOW)
    assert luhn["luhn_ok"] is False and luhn["reason"] == CARD_LUHN_FAILED


def test_cli_card_parse_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    from psp_server.__main__ import main

    assert main(["card", "parse", T1 + T2]) == 0
    out = capsys.readouterr().out
    assert PAN not in out
    assert json.loads(out)["pan_masked"] == "411111******1111"
    assert main(["card", "parse", "%E?;E?"]) == 1
    assert json.loads(capsys.readouterr().out)["reason"] == CARD_READ_ERROR


def test_cli_card_parse_reads_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from psp_server.__main__ import main

    monkeypatch.setattr("sys.stdin", io.StringIO(T1 + "\n" + T2 + "\n"))
    assert main(["card", "parse", "-", "--now", "2026-06-15"]) == 0
    assert json.loads(capsys.readouterr().out)["tracks"] == ["1", "2"]


# --- the PAN vault (adapter) ----------------------------------------------------------------


def test_vault_round_trip_and_tamper() -> None:
    vault = PanVault(bytes(range(32)))
    blob = vault.encrypt(PAN)
    assert PAN.encode() not in blob
    assert vault.encrypt(PAN) != blob  # fresh nonce each time
    assert vault.decrypt(blob) == PAN
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(PanVaultError):
        vault.decrypt(tampered)
    with pytest.raises(PanVaultError):
        PanVault(bytes(32)).decrypt(blob)
    with pytest.raises(PanVaultError):
        vault.decrypt(b"short")
    assert "key" in repr(vault) and "00010203" not in repr(vault)


def test_vault_fingerprint() -> None:
    a, b = PanVault(bytes(32)), PanVault(bytes([1]) * 32)
    assert a.fingerprint(PAN) == a.fingerprint(PAN)
    assert a.fingerprint(PAN) != a.fingerprint("5555555555554444")
    assert a.fingerprint(PAN) != b.fingerprint(PAN)
    assert len(a.fingerprint(PAN)) == 64 and PAN not in a.fingerprint(PAN)
    assert pan_fingerprint(PAN, b"k") == pan_fingerprint(PAN, b"k") != pan_fingerprint(PAN, b"j")


def test_vault_key_from_text() -> None:
    key = bytes(range(32))
    import base64

    assert PanVault.from_text(key.hex()).decrypt(PanVault(key).encrypt(PAN)) == PAN
    assert PanVault.from_text(base64.b64encode(key).decode()).fingerprint(PAN) == PanVault(
        key
    ).fingerprint(PAN)
    for bad in ("", "abc", "00" * 31):
        with pytest.raises(PanVaultError):
            PanVault.from_text(bad)
    with pytest.raises(PanVaultError):
        PanVault(b"short")


def test_vault_key_file(tmp_path: os.PathLike[str]) -> None:
    from pathlib import Path

    path = Path(tmp_path) / "pan.key"
    first = PanVault.from_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    assert PanVault.from_key_file(path).decrypt(first.encrypt(PAN)) == PAN  # same key reloaded
    path.chmod(0o644)
    with pytest.raises(PanVaultError) as info:
        PanVault.from_key_file(path)
    assert info.value.reason == "PAN_VAULT_KEY_FILE_OPEN"
