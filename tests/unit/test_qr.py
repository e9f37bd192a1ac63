"""The EMVCo MPM QR codec: CRC, real payloads of other networks, our encoder's budget, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import qrcode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qr_vectors import (
    BHARATQR_RAZORPAY,
    DUITNOW_MASJID_NEGARA,
    DUITNOW_PAYNET_SAMPLE,
    EMV_KH_OUT_OF_ORDER,
    EMV_PAYCASHLESS,
    EMVCO_SPEC_SAMPLE,
    PAYNOW_VIRGILZHAO,
    PAYNOW_VIRGILZHAO_README,
    PIX_BCB_FULL,
    PIX_BCB_STATIC,
    PROMPTPAY_AMOUNT,
    QRIS_DANA_STATIC,
    UPI_RAZORPAY,
    VECTORS,
    VIETQR_GIAUTM,
    Vector,
)

from psp_server.domain import qr
from psp_server.domain.money import CURRENCIES, Money
from psp_server.domain.qr import QrError, Tlv

REPO = Path(__file__).resolve().parents[2]
TOKEN = "ABCDEFGHIJKLMNOPQRST"  # 20 base32 characters, like the server's tokens


def bitwise_crc(data: bytes) -> int:
    """An independent, bit-by-bit CRC-16/CCITT-FALSE for building test payloads."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def with_crc(body: str) -> str:
    body += "6304"
    return body + f"{bitwise_crc(body.encode('utf-8')):04X}"


def encode(**overrides: object) -> str:
    args: dict[str, object] = {
        "dynamic": True,
        "merchant_code": "SHOP01",
        "token": TOKEN,
        "mcc": "5411",
        "amount": Money(1250, "EUR"),
        "country": "DE",
        "name": "Bäckerei Müller",
        "city": "Köln",
        "bill_number": "ORD-1001",
        "terminal_label": "till-2",
    }
    args.update(overrides)
    return qr.encode_scanpay(**args)  # type: ignore[arg-type]


def reason_of(payload: str) -> str:
    with pytest.raises(QrError) as info:
        qr.parse(payload)
    return info.value.reason


# --------------------------------------------------------------------------- CRC


def test_crc_known_answer() -> None:
    assert qr.crc16_ccitt_false(b"123456789") == 0x29B1
    assert qr.crc16_ccitt_false(b"") == 0xFFFF
    data = b"0002010102115802TH6304"
    assert qr.crc16_ccitt_false(data) == bitwise_crc(data)


def test_crc_is_over_utf8_bytes_of_the_emvco_spec_sample() -> None:
    # The spec's own checksum A13A only verifies over the UTF-8 bytes of its Chinese text.
    body = EMVCO_SPEC_SAMPLE[:-4]
    assert f"{qr.crc16_ccitt_false(body.encode('utf-8')):04X}" == "A13A"


# --------------------------------------------------------------------------- real vectors


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_real_payloads_parse(vector: Vector) -> None:
    parsed = qr.parse(vector.payload)
    assert parsed.scheme == vector.scheme
    assert parsed.scheme_name == qr.SCHEME_NAMES[vector.scheme]
    assert parsed.initiation == vector.initiation
    money = parsed.amount()
    assert (money.decimal_string() if money else None) == vector.amount
    assert parsed.currency == vector.currency
    assert parsed.merchant_name == vector.merchant_name
    assert parsed.merchant_city == vector.merchant_city
    # Codes of other networks are never payable here, and say so plainly.
    assert not parsed.payable
    assert parsed.notice is not None
    assert "cannot be paid" in parsed.notice
    if vector.scheme != "EMVCO":
        assert qr.SCHEME_NAMES[vector.scheme] in parsed.notice


def test_emvco_spec_sample_details() -> None:
    parsed = qr.parse(EMVCO_SPEC_SAMPLE)
    tags = [f.tag for f in parsed.fields]
    assert tags == [
        "00",
        "01",
        "29",
        "31",
        "52",
        "58",
        "59",
        "60",
        "64",
        "54",
        "53",
        "55",
        "62",
        "91",
        "63",
    ]
    alt = parsed.field("64")
    assert alt is not None and alt.children is not None
    assert [(c.tag, c.value) for c in alt.children] == [
        ("00", "ZH"),
        ("01", "最佳运输"),
        ("02", "北京"),
    ]
    unknown = parsed.field("91")
    assert unknown is not None and unknown.child_value("00") == "A011223344998877"
    assert parsed.terminal_label == "A6008667"
    assert parsed.bill_number is None
    assert parsed.mcc == "4111"
    assert parsed.country == "CN"
    assert parsed.amount() == Money(2372, "CNY")


def test_pix_manual_full_example_without_tag_01() -> None:
    parsed = qr.parse(PIX_BCB_FULL)
    assert parsed.field("01") is None
    assert parsed.initiation is None
    assert parsed.scheme == "PIX"
    # A card-network tag, a second account template, the postal code, template 80: kept.
    assert [f.tag for f in parsed.fields] == [
        "00", "04", "26", "27", "52", "53", "54", "58", "59", "60", "61", "62", "80", "63",
    ]  # fmt: skip
    other = parsed.field("27")
    assert other is not None and other.child_value("00") == "BR.COM.OUTRO"
    extra = parsed.field("62")
    assert extra is not None and extra.child_value("05") == "RP12345678-2019"
    assert parsed.amount() == Money(12345, "BRL")


def test_pix_guid_is_case_insensitive() -> None:
    assert "br.gov.bcb.pix" in PIX_BCB_STATIC
    assert qr.parse(PIX_BCB_STATIC).scheme == "PIX"
    assert "BR.GOV.BCB.PIX" in PIX_BCB_FULL
    assert qr.parse(PIX_BCB_FULL).scheme == "PIX"


def test_paynow_readme_text_fails_crc_but_the_generated_payload_parses() -> None:
    # VirgilZhao/paynow's README says 010211 with CRC 0047; the library emits 010212, whose
    # CRC is 0047. The edited README text is a genuine checksum mismatch.
    assert reason_of(PAYNOW_VIRGILZHAO_README) == "QR_CRC_MISMATCH"
    parsed = qr.parse(PAYNOW_VIRGILZHAO)
    assert parsed.scheme == "PAYNOW"
    assert parsed.bill_number == "testordernumber12345678"


def test_format_indicator_02_duitnow() -> None:
    parsed = qr.parse(DUITNOW_PAYNET_SAMPLE)
    assert parsed.fields[0] == Tlv("00", "02")
    assert parsed.scheme == "DUITNOW"
    assert qr.parse(DUITNOW_MASJID_NEGARA).terminal_label == "1704935961905007"


def test_format_indicator_other_than_01_02_is_unsupported() -> None:
    payload = with_crc(tlv("00", "03") + tlv("01", "11") + tlv("53", "978") + tlv("58", "DE"))
    assert reason_of(payload) == "QR_UNSUPPORTED_FORMAT"


def test_qris_issuer_and_national_templates() -> None:
    parsed = qr.parse(QRIS_DANA_STATIC)
    guids = [f.child_value("00") for f in parsed.fields if f.tag in ("26", "51")]
    assert guids == ["ID.DANA.WWW", "ID.CO.QRIS.WWW"]
    assert parsed.scheme == "QRIS"


def test_upi_inside_bharat_qr() -> None:
    parsed = qr.parse(BHARATQR_RAZORPAY)
    assert parsed.scheme == "UPI"
    # Visa (02), Mastercard (04), RuPay (06), ... primitive card-network tags are kept.
    assert [f.tag for f in parsed.fields][:6] == ["00", "01", "02", "04", "06", "08"]


# --------------------------------------------------------------------------- generic EMV


def test_tags_in_any_order_real_vectors() -> None:
    kh = qr.parse(EMV_KH_OUT_OF_ORDER)
    assert [f.tag for f in kh.fields] == [
        "00",
        "01",
        "52",
        "15",
        "60",
        "59",
        "58",
        "54",
        "53",
        "62",
        "63",
    ]
    assert (kh.merchant_name, kh.merchant_city, kh.currency) == (
        "Kuntheas Shop",
        "Banteay Meanchey",
        "USD",
    )
    assert kh.bill_number == "12345678"
    viet = qr.parse(VIETQR_GIAUTM)
    assert [f.tag for f in viet.fields][:4] == ["00", "01", "62", "38"]


def test_tags_in_any_order_our_own_payload_reversed() -> None:
    original = qr.parse(encode())
    middle = [f for f in original.fields if f.tag not in ("00", "63")]
    shuffled = with_crc(tlv("00", "01") + "".join(tlv(f.tag, f.value) for f in reversed(middle)))
    parsed = qr.parse(shuffled)
    assert parsed.scheme == "SCANPAY" and parsed.payable
    assert parsed.scanpay_token == TOKEN
    assert parsed.amount() == Money(1250, "EUR")
    assert parsed.bill_number == "ORD-1001"


def test_unknown_tags_and_unknown_network_are_kept_in_order() -> None:
    parsed = qr.parse(EMV_PAYCASHLESS)
    assert parsed.scheme == "EMVCO"
    assert parsed.notice is not None and "another network" in parsed.notice
    assert [f.tag for f in parsed.fields] == [
        "00",
        "01",
        "36",
        "52",
        "58",
        "59",
        "60",
        "61",
        "54",
        "53",
        "62",
        "80",
        "63",
    ]
    template = parsed.field("36")
    assert template is not None and template.children is not None
    # The GUID sits last inside the template; subtags keep their order.
    assert [c.tag for c in template.children] == ["02", "04", "00"]
    assert template.child_value("00") == "org.paycashless.qpi"

    body = (
        tlv("00", "01")
        + tlv("01", "11")
        + tlv("26", tlv("00", "COM.EXAMPLE.PAY") + tlv("01", "42"))
        + tlv("70", "RFU")
        + tlv("52", "5812")
        + tlv("53", "840")
        + tlv("58", "US")
        + tlv("59", "DINER")
        + tlv("60", "AUSTIN")
        + tlv("99", tlv("00", "X.Y") + tlv("05", "Z"))
    )
    parsed = qr.parse(with_crc(body))
    assert [f.tag for f in parsed.fields] == [
        "00",
        "01",
        "26",
        "70",
        "52",
        "53",
        "58",
        "59",
        "60",
        "99",
        "63",
    ]
    assert parsed.field("70") == Tlv("70", "RFU")
    assert parsed.scheme == "EMVCO"


def test_multibyte_utf8_names_count_characters() -> None:
    name = "ร้านกาแฟดี"  # Thai: 10 code points, 30 bytes in UTF-8
    city = "กรุงเทพ"
    assert len(name) == 10 and len(name.encode("utf-8")) == 30
    body = (
        tlv("00", "01")
        + tlv("01", "12")
        + tlv("29", tlv("00", "A000000677010111") + tlv("01", "0066812345678"))
        + tlv("53", "764")
        + tlv("54", "59.50")
        + tlv("58", "TH")
        + tlv("59", name)
        + tlv("60", city)
        + tlv("64", tlv("00", "ZH") + tlv("01", "咖啡店"))
    )
    assert "5910" + name in body
    payload = with_crc(body)
    parsed = qr.parse(payload)
    assert parsed.merchant_name == name
    assert parsed.merchant_city == city
    assert parsed.scheme == "PROMPTPAY"
    assert parsed.amount() == Money(5950, "THB")
    alt = parsed.field("64")
    assert alt is not None and alt.child_value("01") == "咖啡店"
    # A checksum taken over one byte per character (instead of UTF-8) does not verify.
    per_char = bytes(ord(ch) & 0xFF for ch in body + "6304")
    assert per_char != (body + "6304").encode("utf-8")
    wrong = f"{bitwise_crc(per_char):04X}"
    assert wrong != payload[-4:]
    assert reason_of(body + "6304" + wrong) == "QR_CRC_MISMATCH"


def test_surrounding_whitespace_is_ignored() -> None:
    assert qr.parse(f"  \n{PROMPTPAY_AMOUNT}\r\n").raw == PROMPTPAY_AMOUNT


def test_lower_case_crc_hex_is_accepted() -> None:
    payload = PROMPTPAY_AMOUNT[:-4] + PROMPTPAY_AMOUNT[-4:].lower()
    assert qr.parse(payload).scheme == "PROMPTPAY"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (PROMPTPAY_AMOUNT[:-1] + ("0" if PROMPTPAY_AMOUNT[-1] != "0" else "1"), "QR_CRC_MISMATCH"),
        (PROMPTPAY_AMOUNT.replace("4.22", "9.22"), "QR_CRC_MISMATCH"),
        (PROMPTPAY_AMOUNT[:-8], "QR_CRC_MISSING"),  # no tag 63 at all
        (PROMPTPAY_AMOUNT[:-4], "QR_CRC_MISSING"),  # "...6304" without the checksum
        (PROMPTPAY_AMOUNT[:-2], "QR_MALFORMED"),  # truncated checksum
        ("0002010102115X04" + "ABCD" + "6304ABCD", "QR_MALFORMED"),  # non-digit tag
        ("00020101021158AB" + "TH", "QR_MALFORMED"),  # non-digit length
        ("000201010211589" + "9TH", "QR_MALFORMED"),  # length beyond the end
        ("0002010102115800" + "6304ABCD", "QR_MALFORMED"),  # length 00
        ("000201010211580", "QR_MALFORMED"),  # truncated header
        ("00020101021163041234" + "5802TH", "QR_MALFORMED"),  # CRC not last
        ("0002010102116305ABCDE", "QR_MALFORMED"),  # CRC of the wrong length
        ("0002010102115802TH6304" + "\ud800\ud800\ud800\ud800", "QR_MALFORMED"),  # not text
        ("https://example.com/pay?x=1", "QR_UNSUPPORTED_FORMAT"),
        ("hQVDUFYwMWEaTwegAAAAVVVVUAhQcm9kdWN0MVoIVBM", "QR_UNSUPPORTED_FORMAT"),
        ("", "QR_MALFORMED"),
        ("   ", "QR_MALFORMED"),
        ("0" * 513, "QR_TOO_LONG"),
        ("upi://pay?pn=Nobody&am=1", "QR_MALFORMED"),
        ("upi://mandate?pa=a@b", "QR_UNSUPPORTED_FORMAT"),
    ],
)
def test_broken_payloads_have_stable_reasons(payload: str, reason: str) -> None:
    assert reason_of(payload) == reason
    assert reason in qr.REASONS


def test_non_ascii_digits_are_not_tags_or_lengths() -> None:
    # "٠٢" are Arabic-Indic digits: str.isdigit() says yes, EMV says no.
    assert reason_of("00020101021158٠٢TH6304ABCD") == "QR_MALFORMED"


def test_error_messages_are_plain() -> None:
    with pytest.raises(QrError) as info:
        qr.parse(PROMPTPAY_AMOUNT[:-4] + "0000")
    assert "checksum" in str(info.value)
    assert info.value.reason == "QR_CRC_MISMATCH"
    assert isinstance(info.value, ValueError)


def test_a_broken_template_inside_a_valid_code_is_kept_raw() -> None:
    payload = with_crc(tlv("00", "01") + tlv("26", "00XX") + tlv("53", "978") + tlv("58", "FR"))
    parsed = qr.parse(payload)
    template = parsed.field("26")
    assert template == Tlv("26", "00XX", None)
    assert parsed.scheme == "EMVCO"


# --------------------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    ("text", "currency_numeric", "expected"),
    [
        ("12.50", "978", Money(1250, "EUR")),
        ("12", "978", Money(1200, "EUR")),
        ("12.5", "978", Money(1250, "EUR")),
        ("12.", "978", Money(1200, "EUR")),
        ("500", "392", Money(500, "JPY")),
        ("500.00", "392", Money(500, "JPY")),
        ("1.250", "414", Money(1250, "KWD")),
    ],
)
def test_amount_fits_the_currency_exponent(
    text: str, currency_numeric: str, expected: Money
) -> None:
    payload = with_crc(
        tlv("00", "01") + tlv("53", currency_numeric) + tlv("54", text) + tlv("58", "XX")
    )
    assert qr.parse(payload).amount() == expected


@pytest.mark.parametrize(
    ("text", "currency_numeric"),
    [
        ("12.505", "978"),
        ("500.5", "392"),
        ("1,00", "978"),
        ("abc", "978"),
        ("-5", "978"),
        ("1e3", "978"),
        ("9" * 14, "978"),
    ],
)
def test_bad_amounts(text: str, currency_numeric: str) -> None:
    payload = with_crc(
        tlv("00", "01") + tlv("53", currency_numeric) + tlv("54", text) + tlv("58", "XX")
    )
    parsed = qr.parse(payload)  # the amount is a display hint; parse still succeeds
    with pytest.raises(QrError) as info:
        parsed.amount()
    assert info.value.reason == "QR_BAD_AMOUNT"
    result = qr.inspect(payload)
    assert result["valid"] is False and result["reason"] == "QR_BAD_AMOUNT"


def test_amount_with_unknown_currency_is_none() -> None:
    payload = with_crc(tlv("00", "01") + tlv("53", "999") + tlv("54", "10.00") + tlv("58", "XX"))
    parsed = qr.parse(payload)
    assert parsed.currency is None and parsed.amount_text == "10.00"
    assert parsed.amount() is None


# --------------------------------------------------------------------------- UPI links


def test_upi_link() -> None:
    parsed = qr.parse(UPI_RAZORPAY)
    assert parsed.scheme == "UPI"
    assert parsed.bill_number == "RZPGT5viB4WHeoUuuqrv2"
    assert parsed.mcc == "5411"
    assert parsed.currency_numeric == "356"
    assert parsed.fields[0] == Tlv("pa", "dmart.razorpay@hdfcbank")
    assert [f.tag for f in parsed.fields] == ["pa", "pn", "tr", "tn", "am", "cu", "mc"]


def test_upi_link_is_url_decoded() -> None:
    parsed = qr.parse(
        "UPI://pay?pa=shop%40okaxis&pn=Ravi%20%26%20Sons+Store&am=250.50&tn=Order%2342"
    )
    assert parsed.merchant_name == "Ravi & Sons Store"
    assert parsed.field("pa") == Tlv("pa", "shop@okaxis")
    assert parsed.field("tn") == Tlv("tn", "Order#42")
    assert parsed.amount() == Money(25050, "INR")  # cu absent: INR


# --------------------------------------------------------------------------- our encoder


def test_round_trip_dynamic() -> None:
    payload = encode()
    assert len(payload) <= qr.MAX_PAYLOAD_LENGTH
    assert qr.is_qr_alnum(payload)
    parsed = qr.parse(payload)
    assert parsed.scheme == "SCANPAY" and parsed.scheme_name == "ScanPay"
    assert parsed.payable and parsed.notice is None
    assert parsed.initiation == "dynamic"
    assert parsed.scanpay_merchant_code == "SHOP01"
    assert parsed.scanpay_token == TOKEN
    assert parsed.mcc == "5411" and parsed.country == "DE"
    assert parsed.amount() == Money(1250, "EUR")
    assert parsed.merchant_name == "BACKEREI MULLER"
    assert parsed.merchant_city == "KOLN"
    assert parsed.bill_number == "ORD-1001"
    assert parsed.terminal_label == "TILL-2"
    assert [f.tag for f in parsed.fields] == [
        "00",
        "01",
        "26",
        "52",
        "53",
        "54",
        "58",
        "59",
        "60",
        "62",
        "63",
    ]
    template = parsed.field("26")
    assert template is not None and template.child_value("00") == "SCANPAY"


def test_round_trip_static_without_amount_needs_a_currency() -> None:
    with pytest.raises(QrError) as info:
        encode(dynamic=False, amount=None)
    assert info.value.reason == "QR_INVALID_FIELD"
    parsed = qr.parse(encode(dynamic=False, amount=None, currency="EUR"))
    assert parsed.initiation == "static"
    assert parsed.amount_text is None and parsed.amount() is None
    assert parsed.currency == "EUR"
    assert parsed.payable


def test_amount_formatting() -> None:
    def amount_text(money: Money) -> str | None:
        return qr.parse(encode(amount=money)).amount_text

    assert amount_text(Money(5, "EUR")) == "0.05"
    assert amount_text(Money(500, "JPY")) == "500"
    assert amount_text(Money(1250, "KWD")) == "1.250"
    assert amount_text(Money(10**12 - 1, "EUR")) == "9999999999.99"  # 13 characters
    assert amount_text(Money(10**12, "EUR")) == "10000000000"  # trailing zeros dropped
    assert amount_text(Money(10**12, "KWD")) == "1000000000"
    with pytest.raises(QrError) as info:
        encode(amount=Money(10**14 + 1, "EUR"))
    assert info.value.reason == "QR_BAD_AMOUNT"
    with pytest.raises(QrError) as info:
        encode(amount=Money(0, "EUR"))
    assert info.value.reason == "QR_BAD_AMOUNT"


@pytest.mark.parametrize(
    "overrides",
    [
        {"merchant_code": "shop01"},
        {"merchant_code": "SHOP-01"},
        {"merchant_code": "ABCDEFGHIJK"},
        {"merchant_code": ""},
        {"token": "abcdefgh"},
        {"token": "ABCDEFGH0189"},
        {"token": "ABCDEFGH===="},
        {"token": ""},
        {"mcc": "541"},
        {"mcc": "54A1"},
        {"country": "de"},
        {"country": "DEU"},
        {"currency": "USD"},  # differs from the amount's EUR
        {"amount": None, "currency": "XXX"},
    ],
)
def test_encoder_rejects_bad_input(overrides: dict[str, object]) -> None:
    with pytest.raises(QrError) as info:
        encode(**overrides)
    assert info.value.reason == "QR_INVALID_FIELD"


def test_bill_number_only_when_already_alnum() -> None:
    assert qr.parse(encode(bill_number="ord-1001")).bill_number is None  # never altered
    assert qr.parse(encode(bill_number="ORDER_1")).bill_number is None
    assert qr.parse(encode(bill_number="A" * 26)).bill_number is None  # EMV max 25
    assert qr.parse(encode(bill_number="2024/0815-7")).bill_number == "2024/0815-7"
    assert qr.parse(encode(bill_number=None, terminal_label=None)).field("62") is None
    assert qr.parse(encode(terminal_label="kasse #3")).terminal_label is None


def test_name_is_cut_only_when_needed() -> None:
    short = qr.parse(encode(name="Tante Emma", city="Berlin"))
    assert (short.merchant_name, short.merchant_city) == ("TANTE EMMA", "BERLIN")
    long_name = "Zum Goldenen Hirschen Gasthaus und Metzgerei"
    parsed = qr.parse(
        encode(name=long_name, city="Garmisch-Partenkirchen", bill_number=None, terminal_label=None)
    )
    assert parsed.merchant_name is not None and parsed.merchant_city is not None
    assert qr.to_qr_alnum(long_name, 25).startswith(parsed.merchant_name)
    assert len(parsed.merchant_name) <= 25 and len(parsed.merchant_city) <= 15
    assert len(parsed.raw) <= 154
    assert qr.names_match(long_name, parsed.merchant_name)


def test_optional_fields_give_way_to_name_and_city() -> None:
    payload = encode(
        name="Zum Goldenen Hirschen Gasthaus",
        city="Garmisch-Partenkirchen",
        bill_number="ORDER-2024-000123",
        amount=Money(123456789, "EUR"),
    )
    assert len(payload) <= 154
    parsed = qr.parse(payload)
    assert parsed.merchant_name == "ZUM GOLDENEN HIRSCHEN GAS"
    assert parsed.bill_number is None  # did not fit after the 25-character name


def test_max_length_too_small_for_the_minimum() -> None:
    with pytest.raises(QrError) as info:
        encode(max_length=90)
    assert info.value.reason == "QR_TOO_LONG"
    with pytest.raises(QrError) as info:
        encode(token="A" * 80)  # the account template would exceed 99 characters
    assert info.value.reason == "QR_TOO_LONG"


def test_name_without_latin_letters_uses_the_filler() -> None:
    parsed = qr.parse(encode(name="最佳运输", city="北京"))
    assert (parsed.merchant_name, parsed.merchant_city) == ("NA", "NA")
    assert qr.names_match("最佳运输", "NA")


def fits_version_6_m(payload: str) -> bool:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(payload)
    code.make(fit=True)
    return bool(code.version <= 6)


def test_longest_payload_fits_qr_version_6_m() -> None:
    payload = qr.encode_scanpay(
        dynamic=True,
        merchant_code="ABCDEFGHIJ",
        token="A" * 32,
        mcc="5999",
        amount=Money(10**12 - 1, "EUR"),
        country="DE",
        name="X" * 40,
        city="Y" * 40,
        bill_number="Z" * 25,
        terminal_label="T" * 25,
    )
    assert len(payload) <= 154
    assert fits_version_6_m(payload)
    assert fits_version_6_m("A" * 154)


_ORDER_IDS = st.one_of(
    st.none(),
    st.text(alphabet=qr.ALNUM_CHARSET, max_size=30),
    st.text(max_size=30),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dynamic=st.booleans(),
    merchant_code=st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10),
    token=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=32),
    amount_minor=st.one_of(st.none(), st.integers(min_value=1, max_value=10**12)),
    currency=st.sampled_from(sorted(CURRENCIES)),
    name=st.text(max_size=60),
    city=st.text(max_size=40),
    bill_number=_ORDER_IDS,
    terminal_label=_ORDER_IDS,
)
def test_budget_property(
    dynamic: bool,
    merchant_code: str,
    token: str,
    amount_minor: int | None,
    currency: str,
    name: str,
    city: str,
    bill_number: str | None,
    terminal_label: str | None,
) -> None:
    amount = None if amount_minor is None else Money(amount_minor, currency)
    payload = qr.encode_scanpay(
        dynamic=dynamic,
        merchant_code=merchant_code,
        token=token,
        mcc="5812",
        amount=amount,
        currency=currency,
        country="SG",
        name=name,
        city=city,
        bill_number=bill_number,
        terminal_label=terminal_label,
    )
    assert len(payload) <= 154
    assert qr.is_qr_alnum(payload)
    parsed = qr.parse(payload)
    assert parsed.scheme == "SCANPAY" and parsed.payable
    assert parsed.scanpay_token == token
    assert parsed.scanpay_merchant_code == merchant_code
    assert parsed.initiation == ("dynamic" if dynamic else "static")
    assert parsed.amount() == amount
    assert parsed.currency == currency
    assert parsed.merchant_name and parsed.merchant_city
    assert qr.names_match(name, parsed.merchant_name) or len(qr.to_qr_alnum(name, 25)) > len(
        parsed.merchant_name
    )
    if parsed.bill_number is not None:
        assert parsed.bill_number == bill_number
    assert fits_version_6_m(payload)


# --------------------------------------------------------------------------- text helpers


@pytest.mark.parametrize(
    ("text", "max_len", "expected"),
    [
        ("Café Zürich-Öst", 25, "CAFE ZURICH-OST"),
        ("  Smørrebrød   & Æbleskiver ", 25, "SMORREBROD AEBLESKIVER"),
        ("McDonald's", 25, "MCDONALDS"),
        ("Straße 5 / Köln:Süd", 25, "STRASSE 5 / KOLN:SUD"),
        ("ﬁne Ｗｉｄｅ ①", 25, "FINE WIDE 1"),
        ("Łódź", 15, "LODZ"),
        ("最佳运输", 25, ""),
        ("Toko Sinar Jaya Abadi Makmur Sentosa", 25, "TOKO SINAR JAYA ABADI MAK"),
        ("Toko Sinar Jaya Abadi Makmur", 16, "TOKO SINAR JAYA"),  # no trailing space
        ("50% off $5 *now* +tax", 25, "50% OFF $5 *NOW* +TAX"),
        ("tab\tnew\nline", 25, "TAB NEW LINE"),
    ],
)
def test_to_qr_alnum(text: str, max_len: int, expected: str) -> None:
    assert qr.to_qr_alnum(text, max_len) == expected
    assert qr.is_qr_alnum(expected)


def test_is_qr_alnum() -> None:
    assert qr.is_qr_alnum("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
    assert not qr.is_qr_alnum("abc")
    assert not qr.is_qr_alnum("A_B")
    assert not qr.is_qr_alnum("É")
    assert qr.is_qr_alnum("")


@pytest.mark.parametrize(
    ("registered", "in_qr", "expected"),
    [
        ("Bäckerei Müller", "BACKEREI MULLER", True),
        ("Bäckerei Müller", "Bäckerei Müller", True),
        ("Bäckerei Müller", "BACKEREI MEIER", False),
        ("Zum Goldenen Hirschen Gasthaus", "ZUM GOLDENEN HIRSCHEN GAS", True),  # 25-char cut
        ("Zum Goldenen Hirschen Gasthaus", "ZUM GOLDEN", True),  # budget cut, 10 chars
        ("Zum Goldenen Hirschen Gasthaus", "ZUM GOLD", False),  # too short to trust
        ("Zum Goldenen Hirschen", "ZUM GOLDENEN HIRSCHEN GAS", False),  # longer than registered
        ("Bäckerei Müller", "BACKEREI MULLERS", False),
        ("A&B Shop", "A B SHOP", True),
        ("ร้านกาแฟ", "ร้านกาแฟ", True),
        ("ร้านกาแฟ", "ร้านอื่น", False),
        ("ร้านกาแฟ", "NA", True),
        ("Shop", "", False),
    ],
)
def test_names_match(registered: str, in_qr: str, expected: bool) -> None:
    assert qr.names_match(registered, in_qr) is expected


# --------------------------------------------------------------------------- inspect + CLI


def test_inspect_object() -> None:
    result = qr.inspect(encode())
    assert result == {
        "valid": True,
        "error": None,
        "reason": None,
        "scheme": "SCANPAY",
        "scheme_name": "ScanPay",
        "initiation": "dynamic",
        "amount": "12.50",
        "currency": "EUR",
        "currency_numeric": "978",
        "merchant_name": "BACKEREI MULLER",
        "merchant_city": "KOLN",
        "country": "DE",
        "payable": True,
        "notice": None,
    }
    bad = qr.inspect("nonsense")
    assert bad["valid"] is False and bad["reason"] == "QR_UNSUPPORTED_FORMAT"
    assert bad["error"] and bad["scheme"] is None and bad["payable"] is False


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "psp_server", "qr", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_cli_inspect() -> None:
    ours = run_cli("inspect", encode())
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.count("\n") == 1
    data = json.loads(ours.stdout)
    assert (data["valid"], data["scheme"], data["payable"], data["amount"]) == (
        True,
        "SCANPAY",
        True,
        "12.50",
    )
    expected_keys = {
        "valid", "error", "reason", "scheme", "initiation", "amount", "currency",
        "currency_numeric", "merchant_name", "merchant_city", "country", "payable",
    }  # fmt: skip
    assert expected_keys <= data.keys()

    pix = json.loads(run_cli("inspect", PIX_BCB_STATIC).stdout)
    assert (pix["valid"], pix["scheme"], pix["payable"], pix["currency"]) == (
        True,
        "PIX",
        False,
        "BRL",
    )
    assert pix["merchant_name"] == "Fulano de Tal"

    from_stdin = run_cli("inspect", "-", stdin=EMVCO_SPEC_SAMPLE + "\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    spec = json.loads(from_stdin.stdout)
    assert (spec["scheme"], spec["amount"], spec["currency"]) == ("EMVCO", "23.72", "CNY")

    broken = run_cli("inspect", PROMPTPAY_AMOUNT[:-4] + "0000")
    assert broken.returncode == 1
    info = json.loads(broken.stdout)
    assert (info["valid"], info["reason"]) == (False, "QR_CRC_MISMATCH")
    assert info["error"]
