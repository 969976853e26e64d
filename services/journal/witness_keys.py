"""The banks' witness keys a journal process or a replica knows: the public
halves (``witness-<bank>.pub``, hex) in its keys directory, as the banks
handed them over (docs/operations.md, "Keys and certificates")."""

from __future__ import annotations

from pathlib import Path

__all__ = ["read_witness_keys"]


def read_witness_keys(keys_dir: Path) -> dict[str, bytes]:
    """Each bank's witness public key, by bank; a file that is not a 32-byte key
    in hex is left out (it names no witness anyone could check)."""
    found = {}
    for path in sorted(keys_dir.glob("witness-*.pub")):
        try:
            raw = bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError):
            continue
        if len(raw) == 32:
            found[path.name.removeprefix("witness-").removesuffix(".pub")] = raw
    return found
