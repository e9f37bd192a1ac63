"""A self-signed certificate for ``scanpay wallet --https``.

Phone browsers give the camera only to secure pages, and a shop's network has no public
name to get a real certificate for. So the wallet makes its own once, valid for localhost,
127.0.0.1 and this machine's LAN addresses, and keeps it in the data directory. The phone
shows a warning the first time; accept it (docs/wallet.md says how).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_NAME = "wallet-cert.pem"
KEY_NAME = "wallet-key.pem"
VALID_DAYS = 825  # the longest validity Apple devices accept for a server certificate


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses other people on the network can reach, best first."""
    found: list[str] = []
    # The address the default route leaves from (connect() on UDP sends nothing).
    for probe in ("10.255.255.255", "192.168.255.255"):
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((probe, 1))
            found.append(s.getsockname()[0])
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.append(str(info[4][0]))
    out: list[str] = []
    for addr in found:
        ip = ipaddress.ip_address(addr)
        if not ip.is_loopback and not ip.is_unspecified and addr not in out:
            out.append(addr)
    return out


def ensure_certificate(data_dir: Path, hosts: list[str] | None = None) -> tuple[Path, Path]:
    """The certificate and key paths in ``data_dir``, made on first use and kept after.

    ``hosts`` (names or IP addresses) go into the certificate's subject alternative names
    besides localhost, 127.0.0.1, ::1 and the LAN addresses. Delete the two files to make a
    new certificate (after the machine moves to another network, say).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = data_dir / CERT_NAME, data_dir / KEY_NAME
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path

    names = ["localhost", socket.gethostname(), *(hosts or [])]
    addresses = ["127.0.0.1", "::1", *lan_addresses()]
    sans: list[x509.GeneralName] = []
    for item in [*names, *addresses]:
        try:
            general: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(item))
        except ValueError:
            general = x509.DNSName(item)
        if item and general not in sans:
            sans.append(general)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ScanPay wallet (self-signed)"),
            x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname()[:64] or "localhost"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp_key = key_path.with_suffix(".tmp")
    tmp_key.touch(mode=0o600)
    tmp_key.write_bytes(key_bytes)
    tmp_key.replace(key_path)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def certificate_names(cert_path: Path) -> list[str]:
    """The subject alternative names of a certificate, as text."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return [str(v) for v in ext.value.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.value.get_values_for_type(x509.IPAddress)
    ]
