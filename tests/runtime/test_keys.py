import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature

from services.runtime.errors import ConfigError
from services.runtime.keys import key_id_of, load_or_create_signer


def test_key_is_created_private_and_reused(tmp_path: Path) -> None:
    first = load_or_create_signer(tmp_path, "orders")
    path = tmp_path / "orders.ed25519.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_signer(tmp_path, "orders")
    assert again.public_raw == first.public_raw
    assert first.key_id == key_id_of(first.public_raw) and len(first.key_id) == 32
    sig = first.sign(b"m")
    again.private_key.public_key().verify(sig, b"m")
    with pytest.raises(InvalidSignature):
        again.private_key.public_key().verify(sig, b"other")


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_signer(tmp_path, "orders")
    (tmp_path / "orders.ed25519.pem").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_signer(tmp_path, "orders")
