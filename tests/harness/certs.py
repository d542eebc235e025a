"""Certificates for mTLS tests, generated at test time with `cryptography`.

A test CA signs a server certificate for 127.0.0.1 (the Envoy listener) and client
certificates whose only subject alternative name is a SPIFFE id (URI SAN), the way Istio
issues workload certificates (``spiffe://<trust domain>/ns/<namespace>/sa/<account>``).
Workload binding compares that URI with the token's workload, so the shape matters more
than anything else: one URI SAN, end-entity, clientAuth. ECDSA P-256 keeps generation in
the milliseconds (RSA would dominate test start-up).

Nothing is committed; files are written to a directory the test owns, because Python's
``ssl`` loads client certificates only from files. Envoy gets the PEM inline.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "cluster.local"
# Long enough for any run, short enough that a leaked file is useless soon; backdated so a
# clock a little behind does not make a fresh certificate "not yet valid".
VALIDITY = _dt.timedelta(hours=2)
BACKDATE = _dt.timedelta(minutes=5)


def spiffe_id(namespace: str, service_account: str, trust_domain: str = TRUST_DOMAIN) -> str:
    """Istio's SPIFFE id of a workload."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Issued:
    """A certificate and its private key, as PEM."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    @property
    def uri_sans(self) -> list[str]:
        try:
            san = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return san.get_values_for_type(x509.UniformResourceIdentifier)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Writes ``<stem>.crt`` and ``<stem>.key``; returns their paths."""
        directory.mkdir(parents=True, exist_ok=True)
        crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        crt.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        return crt, key


class CertificateAuthority:
    """A self-signed test CA that issues server and SPIFFE client certificates."""

    def __init__(self, common_name: str = "meshguard test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.name = name
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _issue(self, common_name: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Issued(cert, key)

    def server(self, ip: str = "127.0.0.1") -> Issued:
        """A serving certificate for `ip` (IP SAN; clients verify it against this CA)."""
        return self._issue(f"meshguard test server {ip}", [x509.IPAddress(ipaddress.ip_address(ip))],
                           ExtendedKeyUsageOID.SERVER_AUTH)

    def workload(self, spiffe: str) -> Issued:
        """A client certificate whose only SAN is the SPIFFE id `spiffe` (as Istio's)."""
        if not spiffe.startswith("spiffe://"):
            raise ValueError(f"{spiffe!r} is not a SPIFFE id")
        return self._issue(spiffe.rsplit("/", 1)[-1], [x509.UniformResourceIdentifier(spiffe)],
                           ExtendedKeyUsageOID.CLIENT_AUTH)


@dataclass
class MtlsMaterial:
    """Everything an mTLS test needs: the CA, the server certificate for Envoy and client
    certificates per SPIFFE id, also written to `directory` for Python's ``ssl``."""

    ca: CertificateAuthority
    server: Issued
    clients: dict[str, Issued]
    directory: Path

    @classmethod
    def generate(cls, directory: Path, spiffe_ids: list[str]) -> "MtlsMaterial":
        ca = CertificateAuthority()
        material = cls(ca, ca.server(), {s: ca.workload(s) for s in spiffe_ids}, directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.crt").write_bytes(ca.cert_pem)
        for i, issued in enumerate(material.clients.values()):
            issued.write(directory, f"client-{i}")
        return material

    def client_context(self, spiffe: str | None) -> ssl.SSLContext:
        """A client TLS context trusting the test CA, presenting the certificate of
        `spiffe` (``None``: no client certificate at all)."""
        ctx = ssl.create_default_context(cafile=str(self.directory / "ca.crt"))
        if spiffe is not None:
            index = list(self.clients).index(spiffe)
            ctx.load_cert_chain(self.directory / f"client-{index}.crt", self.directory / f"client-{index}.key")
        return ctx

    def foreign_client_context(self, spiffe: str) -> ssl.SSLContext:
        """A client presenting a certificate for `spiffe` from ANOTHER CA (an impostor)."""
        other = CertificateAuthority("impostor CA").workload(spiffe)
        crt, key = other.write(self.directory, "impostor")
        ctx = ssl.create_default_context(cafile=str(self.directory / "ca.crt"))
        ctx.load_cert_chain(crt, key)
        return ctx


def downstream_tls_context(material: MtlsMaterial, *, require_client_certificate: bool = True) -> dict:
    """Envoy's ``DownstreamTlsContext`` (as a transport socket) serving `material.server`
    and validating client certificates against the test CA."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": require_client_certificate,
            "common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": {"inline_string": material.server.cert_pem.decode()},
                    "private_key": {"inline_string": material.server.key_pem.decode()},
                }],
                "validation_context": {"trusted_ca": {"inline_string": material.ca.cert_pem.decode()}},
            },
        },
    }
