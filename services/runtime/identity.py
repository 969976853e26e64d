"""Who is calling: the party and role written in the client certificate.

A certificate's subject carries the party id (CN), its organisation (O: the
bank of an underwriter, the company of anyone else) and its role (OU). The
platform CA is the only issuer trusted, so these fields are as good as the
CA's word. No request field is ever used for identity.
"""

from __future__ import annotations

import contextvars
import enum
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from services.runtime.errors import PermissionDenied, Unauthenticated

__all__ = ["Identity", "Role", "current_identity", "identity_from_pem", "require_role"]


class Role(enum.StrEnum):
    SUBCONTRACTOR = "subcontractor"
    BUYER = "buyer"
    UNDERWRITER = "underwriter"
    LEASING = "leasing"
    #: Sells equipment that a leasing company buys and leases out.
    VENDOR = "vendor"
    AUDITOR = "auditor"
    OPERATOR = "operator"
    SERVICE = "service"


@dataclass(frozen=True)
class Identity:
    """A caller proven by mTLS."""

    party_id: str
    role: Role
    #: The organisation: an underwriter's bank, otherwise the party's company.
    organization: str


_current: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "scf_identity", default=None
)


def current_identity() -> Identity:
    """The identity of the caller of the RPC being served."""
    identity = _current.get()
    if identity is None:
        raise Unauthenticated("no client certificate identity for this call")
    return identity


def set_identity(identity: Identity | None) -> contextvars.Token[Identity | None]:
    return _current.set(identity)


def reset_identity(token: contextvars.Token[Identity | None]) -> None:
    _current.reset(token)


def require_role(*roles: Role) -> Identity:
    """The caller, if it has one of ``roles``; PERMISSION_DENIED otherwise."""
    identity = current_identity()
    if identity.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise PermissionDenied(
            f"{identity.party_id} is a {identity.role.value}; this call is for: {allowed}"
        )
    return identity


def identity_from_pem(pem: bytes) -> Identity:
    """Read party, role and organisation from a client certificate."""
    cert = x509.load_pem_x509_certificate(pem)
    subject = cert.subject

    def one(oid: x509.ObjectIdentifier, what: str) -> str:
        attrs = subject.get_attributes_for_oid(oid)
        if len(attrs) != 1:
            raise Unauthenticated(f"client certificate has no single {what}")
        value = attrs[0].value
        return value.decode() if isinstance(value, bytes) else value

    party = one(NameOID.COMMON_NAME, "common name (party id)")
    org = one(NameOID.ORGANIZATION_NAME, "organisation")
    role_name = one(NameOID.ORGANIZATIONAL_UNIT_NAME, "organisational unit (role)")
    try:
        role = Role(role_name)
    except ValueError:
        raise Unauthenticated(f"client certificate names an unknown role {role_name!r}") from None
    return Identity(party_id=party, role=role, organization=org)
