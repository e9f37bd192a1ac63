"""Real, published QR payloads used as test vectors for psp_server.domain.qr.

Only the data strings come from the sources named; each CRC was checked independently
(CRC-16/CCITT-FALSE over the UTF-8 bytes up to and including "6304") before use.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vector:
    name: str
    payload: str
    scheme: str
    initiation: str | None
    amount: str | None  # Money.decimal_string() of ParsedQr.amount()
    currency: str | None
    merchant_name: str | None
    merchant_city: str | None
    source: str


# EMVCo QRCPS Merchant-Presented Mode v1.0 specification, example payload (CRC A13A);
# as quoted in ericsalim/exemvi test/mpm_test.exs (@official_sample). Multi-byte UTF-8 in
# tag 64 (merchant information in Chinese), unknown template 91, tip indicator 55.
EMVCO_SPEC_SAMPLE = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME"
    "91320016A0112233449988770708123456786304A13A"
)

# Banco Central do Brasil, "Manual de Padroes para Iniciacao do Pix", static BR Code
# example (CRC 1D3D); tag 01 is absent. Quoted verbatim in many Pix library tests.
PIX_BCB_STATIC = (
    "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-426655440000"
    "5204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***63041D3D"
)

# Same manual, the full example: no tag 01, card-network tag 04, a second merchant template
# (27, BR.COM.OUTRO), postal code 61, txid in 62/05 and an unreserved template 80
# (CRC AD38); quoted in a Go test (TestCrcChecksum, "drinkBack/payments/pix").
PIX_BCB_FULL = (
    "00020104141234567890123426580014BR.GOV.BCB.PIX0136123e4567-e12b-12d1-a456-426655440000"
    "27300012BR.COM.OUTRO011001234567895204000053039865406123.455802BR5917NOME DO RECEBEDOR"
    "6008BRASILIA61087007490062190515RP12345678-201980390012BR.COM.OUTRO01190123.ABCD.3456.WXYZ"
    "6304AD38"
)

# dtinth/promptpay-qr index.test.js (the reference PromptPay payload generator).
PROMPTPAY_PHONE = "00020101021129370016A000000677010111011300668012345675802TH530376463046197"
PROMPTPAY_NATIONAL_ID = "00020101021129370016A000000677010111021311111111111115802TH530376463047B5A"
PROMPTPAY_AMOUNT = (
    "00020101021229370016A000000677010111011300660000000005802TH530376454044.226304E469"
)

# VirgilZhao/paynow README.md. The README prints "...010211..." with CRC 0047, which does
# NOT verify: the library (paynow.go) always emits "010212" (dynamic), and with 010212 the
# CRC is exactly 0047 -- the README text was edited after generation. We keep both: the
# generated payload parses, the README text is a real-world CRC mismatch.
PAYNOW_VIRGILZHAO_README = (
    "00020101021126470009SG.PAYNOW010120208123456780301004082026030452040000530370254040.99"
    "5802SG5911testcompany6009Singapore62270123testordernumber1234567863040047"
)
PAYNOW_VIRGILZHAO = PAYNOW_VIRGILZHAO_README.replace("010211", "010212", 1)

# DuitNow QR: the PayNet specification's sample merchant (QRCS DN BHD, Bangi) with format
# indicator "02" and an amount (CRC 343F), as quoted in a TypeScript emvco-qr test of
# published scheme payloads.
DUITNOW_PAYNET_SAMPLE = (
    "00020201021126410014A000000615000101065016640209123456789520499995303458540510.00"
    "5802MY5909QRCSDNBHD6005BANGI6304343F"
)
# A published DuitNow sticker of a real mosque (Masjid Negara), in a public donation-app
# data file (institutions.ts); 62 carries a reference and a terminal label (07).
DUITNOW_MASJID_NEGARA = (
    "00020201021126420014A000000615000101066033460210MD001295465204939953034585802MY"
    "5913MASJID NEGARA6002MY627303251704936237869008996045430052017072988178750084448071617049"
    "359619050076304FD9C"
)

# sunary/qris README.md: QRIS with only the issuer template ID.CO.SHOPEE.WWW.
QRIS_SHOPEE = (
    "00020101021226380016ID.CO.SHOPEE.WWW010201020815863724530336054061440005802ID"
    "5921PT. SHOPPEE INDONESIA6007JAKARTA62180814gen by go-qris63049635"
)
# A static QRIS with the issuer template (ID.DANA.WWW, tag 26) and the national
# ID.CO.QRIS.WWW template (tag 51), from a node:test of a QRIS parser (CRC E0BD).
QRIS_DANA_STATIC = (
    "00020101021126570011ID.DANA.WWW011893600915303023251702090302325170303UMI"
    "51440014ID.CO.QRIS.WWW0215ID10265294489570303UMI5204737253033605802ID5914Raol Mukarrozi"
    "6015Kota Banjar Bar6105707316304E0BD"
)

# giautm/emvqr-go emvqr_test.go (Test_BuildPayload "VietQR"): tag 62 placed before the
# NAPAS template 38, i.e. tags out of the usual order.
VIETQR_GIAUTM = (
    "00020101021262110807tien le38560010A0000007270126000697041501121133666688880208QRIBFTTA"
    "5303704540460005802VN63046893"
)
# VietQR transfer of 120000 VND with note "ung ho lu lut" (CRC C15C), quoted in a VietQR
# generator test citing the NAPAS generator reference.
VIETQR_TRANSFER = (
    "00020101021238570010A00000072701270006970415011300110019324180208QRIBFTTA"
    "530370454061200005802VN62170813ung ho lu lut6304C15C"
)

# Razorpay QR Codes API documentation (image_content examples): a Bharat QR with the UPI
# template (NPCI AID A000000524) plus Visa/Mastercard/RuPay tags, and a UPI link.
BHARATQR_RAZORPAY = (
    "000201010212021643926300000000850415540461000000008061661005900000000890827"
    "YESB0CMSNOC222333004882700126430010A0000005240117razorpaybqr@icici02041.10"
    "27350010A0000005240117RZPGT8ildsFTgS5Sp52047531530335654041.105802IN5906zxcbmn"
    "6005Delhi610611008562300514GT8ildsFTgS5Sp070838R004506304B6A9"
)
UPI_RAZORPAY = (
    "upi://pay?pa=dmart.razorpay@hdfcbank&pn=TestAccount&tr=RZPGT5viB4WHeoUuuqrv2"
    "&tn=TestAccountRaftarSoft&am=100&cu=INR&mc=5411"
)

# phannaly/emv-qr-code README.md (MerchantPresentedDecoder example): Cambodian merchant,
# UnionPay tag 15, and the fields deliberately out of order (52 first, 60 before 59,
# 54 before 53).
EMV_KH_OUT_OF_ORDER = (
    "00020101021252044131153137210116372101160123456789ABCDE6016Banteay Meanchey"
    "5913Kuntheas Shop5802KH540510.005303840621201081234567863041FF2"
)

# paycashless/qpi.js README.md: an unknown network's template 36 whose GUID (subtag 00)
# comes last, plus template 80 -- must parse as a generic EMV code.
EMV_PAYCASHLESS = (
    "00020101021236470210220001070204060902670019org.paycashless.qpi520441115802NG"
    "5908GRUBWAYS6005ABUJA6106900231540450005303566627703030550620customer@example.com"
    "0702050512PAY_567228030813FOOD DELIVERY110352180630136tok_neojvjkwPrrpr9e03hplcag2ig5gpua8"
    "0019org.paycashless.qpi630423C0"
)

VECTORS: tuple[Vector, ...] = (
    Vector(
        "emvco-spec",
        EMVCO_SPEC_SAMPLE,
        "EMVCO",
        "dynamic",
        "23.72",
        "CNY",
        "BEST TRANSPORT",
        "BEIJING",
        "EMVCo MPM spec example",
    ),
    Vector(
        "pix-bcb-static",
        PIX_BCB_STATIC,
        "PIX",
        None,
        None,
        "BRL",
        "Fulano de Tal",
        "BRASILIA",
        "BCB Pix manual",
    ),
    Vector(
        "pix-bcb-full",
        PIX_BCB_FULL,
        "PIX",
        None,
        "123.45",
        "BRL",
        "NOME DO RECEBEDOR",
        "BRASILIA",
        "BCB Pix manual",
    ),
    Vector(
        "promptpay-phone",
        PROMPTPAY_PHONE,
        "PROMPTPAY",
        "static",
        None,
        "THB",
        None,
        None,
        "dtinth/promptpay-qr",
    ),
    Vector(
        "promptpay-national-id",
        PROMPTPAY_NATIONAL_ID,
        "PROMPTPAY",
        "static",
        None,
        "THB",
        None,
        None,
        "dtinth/promptpay-qr",
    ),
    Vector(
        "promptpay-amount",
        PROMPTPAY_AMOUNT,
        "PROMPTPAY",
        "dynamic",
        "4.22",
        "THB",
        None,
        None,
        "dtinth/promptpay-qr",
    ),
    Vector(
        "paynow-virgilzhao",
        PAYNOW_VIRGILZHAO,
        "PAYNOW",
        "dynamic",
        "0.99",
        "SGD",
        "testcompany",
        "Singapore",
        "VirgilZhao/paynow",
    ),
    Vector(
        "duitnow-paynet",
        DUITNOW_PAYNET_SAMPLE,
        "DUITNOW",
        "static",
        "10.00",
        "MYR",
        "QRCSDNBHD",
        "BANGI",
        "PayNet sample",
    ),
    Vector(
        "duitnow-masjid-negara",
        DUITNOW_MASJID_NEGARA,
        "DUITNOW",
        "static",
        None,
        "MYR",
        "MASJID NEGARA",
        "MY",
        "published sticker",
    ),
    Vector(
        "qris-shopee",
        QRIS_SHOPEE,
        "QRIS",
        "dynamic",
        "144000.00",
        "IDR",
        "PT. SHOPPEE INDONESIA",
        "JAKARTA",
        "sunary/qris",
    ),
    Vector(
        "qris-dana-static",
        QRIS_DANA_STATIC,
        "QRIS",
        "static",
        None,
        "IDR",
        "Raol Mukarrozi",
        "Kota Banjar Bar",
        "QRIS parser test",
    ),
    Vector(
        "vietqr-giautm",
        VIETQR_GIAUTM,
        "VIETQR",
        "dynamic",
        "6000",
        "VND",
        None,
        None,
        "giautm/emvqr-go",
    ),
    Vector(
        "vietqr-transfer",
        VIETQR_TRANSFER,
        "VIETQR",
        "dynamic",
        "120000",
        "VND",
        None,
        None,
        "NAPAS generator reference",
    ),
    Vector(
        "bharatqr-upi",
        BHARATQR_RAZORPAY,
        "UPI",
        "dynamic",
        "1.10",
        "INR",
        "zxcbmn",
        "Delhi",
        "Razorpay docs",
    ),
    Vector(
        "upi-link",
        UPI_RAZORPAY,
        "UPI",
        None,
        "100.00",
        "INR",
        "TestAccount",
        None,
        "Razorpay docs",
    ),
    Vector(
        "emv-kh-out-of-order",
        EMV_KH_OUT_OF_ORDER,
        "EMVCO",
        "dynamic",
        "10.00",
        "USD",
        "Kuntheas Shop",
        "Banteay Meanchey",
        "phannaly/emv-qr-code",
    ),
    Vector(
        "emv-paycashless",
        EMV_PAYCASHLESS,
        "EMVCO",
        "dynamic",
        "5000.00",
        "NGN",
        "GRUBWAYS",
        "ABUJA",
        "paycashless/qpi.js",
    ),
)
