"""The platform certificate authority and the parties' certificates.

TLS certificates use ECDSA P-256 (every TLS stack accepts it); the journal's
signing keys are separate Ed25519 keys (see :mod:`services.runtime.keys`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.runtime.config import SERVICE_NAMES
from services.runtime.errors import ConfigError
from services.runtime.identity import Role

__all__ = [
    "EXAMPLE_PARTIES",
    "NATS_HOSTS",
    "PartyCert",
    "ensure_certificates",
    "ensure_nats_server_certificate",
    "load_party",
]

_VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True)
class PartySpec:
    party_id: str
    role: Role
    organization: str


#: The services and the example parties that `scf certs init` creates.
EXAMPLE_PARTIES: tuple[PartySpec, ...] = (
    *(PartySpec(name, Role.SERVICE, "platform") for name in SERVICE_NAMES),
    PartySpec("operator", Role.OPERATOR, "platform"),
    PartySpec("acme-builders", Role.SUBCONTRACTOR, "acme-builders"),
    PartySpec("delta-pumps", Role.SUBCONTRACTOR, "delta-pumps"),
    PartySpec("citybuild", Role.BUYER, "citybuild"),
    PartySpec("harbor-works", Role.BUYER, "harbor-works"),
    PartySpec("metro-transit", Role.BUYER, "metro-transit"),
    PartySpec("riverside-power", Role.BUYER, "riverside-power"),
    PartySpec("uw-alice", Role.UNDERWRITER, "bank-north"),
    PartySpec("uw-bob", Role.UNDERWRITER, "bank-north"),
    PartySpec("uw-carol", Role.UNDERWRITER, "bank-south"),
    PartySpec("lease-one", Role.LEASING, "lease-one"),
    # The leasing company's staff: two, for four eyes.
    PartySpec("ls-dana", Role.LEASING, "lease-one"),
    PartySpec("ls-erik", Role.LEASING, "lease-one"),
    PartySpec("liftco", Role.VENDOR, "liftco"),
    PartySpec("pumpmart", Role.VENDOR, "pumpmart"),
    PartySpec("auditor-reg", Role.AUDITOR, "regulator"),
    # Each bank's journal replica reads the journal as an auditor of its bank.
    PartySpec("replica-bank-north", Role.AUDITOR, "bank-north"),
    PartySpec("replica-bank-south", Role.AUDITOR, "bank-south"),
)


@dataclass(frozen=True)
class PartyCert:
    """PEM bytes a party needs for mTLS."""

    ca: bytes
    cert: bytes
    key: bytes


def _name(cn: str, org: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        ]
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _create_ca(certs_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("SCF platform CA", "platform", "ca")
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + 2 * _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(certs_dir / "ca.key", _key_pem(key))
    (certs_dir / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def serves(spec: PartySpec) -> bool:
    """Whether a party's certificate may serve TLS: the services and the banks'
    replicas. Every other party's is for client authentication only."""
    return spec.role is Role.SERVICE or spec.party_id.startswith("replica-")


def _server_names(spec: PartySpec, hosts: Sequence[str]) -> list[x509.GeneralName]:
    """A server's names: its own name, loopback, and the hosts it is reached at."""
    names: list[x509.GeneralName] = []
    for host in ("localhost", spec.party_id, *hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    return list(dict.fromkeys(names))


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    spec: PartySpec,
    out: Path,
    hosts: Sequence[str] = (),
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    uri = x509.UniformResourceIdentifier(
        f"scf://{spec.role.value}/{spec.organization}/{spec.party_id}"
    )
    if serves(spec):
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
        names = [*_server_names(spec, hosts), uri]
    else:  # no host name: a party's certificate cannot pass for a server
        usages, names = [ExtendedKeyUsageOID.CLIENT_AUTH], [uri]
    subject = _name(spec.party_id, spec.organization, spec.role.value)
    _write_pair(out, spec.party_id, key, _sign(ca_cert, ca_key, subject, key, usages, names))


def _sign(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    usages: list[x509.ObjectIdentifier],
    names: list[x509.GeneralName],
) -> x509.Certificate:
    """A leaf certificate of the platform CA (never itself a CA)."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _write_pair(
    out: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    _write_private(out / f"{name}.key", _key_pem(key))
    (out / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_certificates(
    certs_dir: Path,
    parties: tuple[PartySpec, ...] = EXAMPLE_PARTIES,
    service_hosts: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Create the CA if missing, and a certificate for each party that has none.

    ``service_hosts`` names, per service (or replica), the host names or
    addresses it is reached at beyond loopback and its own name (a cluster's
    ``journal.scf.svc``). Returns the party ids issued now.
    """
    hosts = service_hosts or {}
    try:
        certs_dir.mkdir(parents=True, exist_ok=True)
        (certs_dir / "parties").mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError("SCF_CERTS_DIR", f"cannot create {certs_dir}: {exc.strerror}") from None
    if (certs_dir / "ca.pem").exists() and (certs_dir / "ca.key").exists():
        ca_cert = x509.load_pem_x509_certificate((certs_dir / "ca.pem").read_bytes())
        loaded = serialization.load_pem_private_key((certs_dir / "ca.key").read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca_key = loaded
    else:
        ca_cert, ca_key = _create_ca(certs_dir)
    issued = []
    for spec in parties:
        if not (certs_dir / "parties" / f"{spec.party_id}.pem").exists():
            _issue(ca_cert, ca_key, spec, certs_dir / "parties", hosts.get(spec.party_id, ()))
            issued.append(spec.party_id)
    return issued


#: The names a NATS node of the deployments' three-node cluster answers to.
NATS_HOSTS = ("scf-nats", *(f"scf-nats-{n}" for n in range(3)),
              *(f"scf-nats-{n}.scf-nats" for n in range(3)))  # fmt: skip


def ensure_nats_server_certificate(certs_dir: Path, hosts: Sequence[str] = NATS_HOSTS) -> bool:
    """``nats/server.pem`` and ``server.key``: the NATS nodes' TLS certificate
    (deploy/ mounts it), issued by the platform CA if missing; whether it was."""
    out = certs_dir / "nats"
    if (out / "server.pem").exists():
        return False
    ensure_certificates(certs_dir, ())
    ca_cert = x509.load_pem_x509_certificate((certs_dir / "ca.pem").read_bytes())
    loaded = serialization.load_pem_private_key((certs_dir / "ca.key").read_bytes(), None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    out.mkdir(exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in ("localhost", *hosts)]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    # Client too: the nodes' routes authenticate one another.
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scf-nats")])
    _write_pair(out, "server", key, _sign(ca_cert, loaded, subject, key, usages, names))
    return True


def load_party(certs_dir: Path, party_id: str) -> PartyCert:
    """The CA certificate and a party's certificate and key, for mTLS."""
    try:
        return PartyCert(
            ca=(certs_dir / "ca.pem").read_bytes(),
            cert=(certs_dir / "parties" / f"{party_id}.pem").read_bytes(),
            key=(certs_dir / "parties" / f"{party_id}.key").read_bytes(),
        )
    except FileNotFoundError as exc:
        raise ConfigError(
            "SCF_CERTS_DIR", f"missing certificate file {exc.filename}: run `scf certs init`"
        ) from None
