"""The other services' keys, as the journal declares them, checked from the root.

A service verifies every signed message from another service against the
producer keys of the journal's key entries (``journal/keys``): each entry is
checked against the platform root public key before it is taken in, so a
journal (or a network) that serves a forged key set is refused rather than
believed. The set is read again when an unknown key appears (at most once
a second) and every ``max_age_s``, so a rotation or a revocation is seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc

from services.gen.scf.journal.v1 import journal_pb2
from services.journal import KEYS_SUBJECT, EncodingError, KeyRefused, KeySet, decode_entry
from services.runtime.errors import Unavailable

__all__ = ["ROOT_PUBLIC_FILE", "PeerKeys"]

log = logging.getLogger(__name__)

#: The platform root public key (hex), beside the services' keys.
ROOT_PUBLIC_FILE = "platform-root.pub"


class PeerKeys:
    """Verifies producer signatures; the journal's key set, loaded lazily."""

    def __init__(
        self, audit: object, keys_dir: Path, *, max_age_s: float = 60.0, retry_s: float = 1.0
    ) -> None:
        #: An AuditClient (services.runtime.journal_client): a channel factory.
        self.audit = audit
        self.root_file = keys_dir / ROOT_PUBLIC_FILE
        self.max_age_s = max_age_s
        self.retry_s = retry_s
        self._keys: KeySet | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def verify(self, producer: str, key_id: bytes, message: bytes, signature: bytes) -> None:
        """Raise :class:`KeyRefused` unless ``producer``'s registered key signed ``message``."""
        keys = await self._current()
        try:
            keys.key_for(producer, key_id)
        except KeyRefused:
            if time.monotonic() - self._loaded_at < self.retry_s:
                raise
            keys = await self.refresh()
        keys.verify(producer, key_id, message, signature)

    async def _current(self) -> KeySet:
        if self._keys is None or time.monotonic() - self._loaded_at > self.max_age_s:
            return await self.refresh()
        return self._keys

    async def refresh(self) -> KeySet:
        async with self._lock:
            if self._keys is not None and time.monotonic() - self._loaded_at < self.retry_s:
                return self._keys
            try:
                root = bytes.fromhex(self.root_file.read_text().strip())
            except (OSError, ValueError) as exc:
                problem = f"no platform root public key at {self.root_file}: {exc}"
                raise Unavailable(problem) from None
            keys = KeySet(root)
            try:
                async with self.audit() as stub:  # type: ignore[operator]
                    async for item in stub.GetSubjectHistory(
                        journal_pb2.GetSubjectHistoryRequest(subject=KEYS_SUBJECT), timeout=10
                    ):
                        entry = decode_entry(item.entry.leaf)
                        keys.check_entry(entry)
                        keys.apply(entry)
            except grpc.aio.AioRpcError as exc:
                problem = f"the journal's key set is out of reach: {exc.code().name}"
                raise Unavailable(problem) from None
            except (EncodingError, KeyRefused) as exc:
                log.error("ALARM: the journal served a key set that does not verify: %s", exc)
                raise Unavailable(f"the journal's key set does not verify: {exc}") from None
            self._keys, self._loaded_at = keys, time.monotonic()
            return keys
