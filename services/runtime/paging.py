"""Pages of a List call: ``page_size``, an opaque ``page_token``, and the
``next_page_token`` of the answer (empty on the last page).

Pages are by key, not by offset: a token holds the sort key of the last item
given, and the next page starts after it, so items added or removed between
calls never shift a page. A token is only ever what a service gave out; one
that does not decode to a key of the expected shape is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from services.runtime.errors import InvalidArgument

__all__ = ["MAX_PAGE_SIZE", "Page", "page_of", "paged"]

T = TypeVar("T")
Key = tuple[int | str, ...]

#: The most any List gives at once (the bounds table says the same).
MAX_PAGE_SIZE = 100
#: Keys are stored as PostgreSQL bigint: a larger number was never given out.
_INT64 = 2**63


@dataclass(frozen=True)
class Page:
    """One page asked for: how many, and after which key (None: from the start)."""

    size: int
    after: Key | None

    def fetch(self) -> int:
        """How many rows to read: one more than the page, to know if another follows."""
        return self.size + 1

    def cut(self, rows: Sequence[T], key: Callable[[T], Key]) -> tuple[list[T], str]:
        """``rows`` read after ``after`` in key order (at most ``fetch()``): this
        page's items and the next page's token."""
        if len(rows) <= self.size:
            return list(rows), ""
        kept = list(rows[: self.size])
        token = json.dumps(list(key(kept[-1])), separators=(",", ":")).encode()
        return kept, base64.urlsafe_b64encode(token).decode()


def page_of(page_size: int, page_token: str, shape: tuple[type, ...], default: int = 50) -> Page:
    """The page a request asks for; ``shape`` is the types of its sort key."""
    if page_size > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"at most {MAX_PAGE_SIZE}")
    if not page_token:
        return Page(page_size or default, None)
    try:
        after = json.loads(base64.urlsafe_b64decode(page_token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        after = None
    if (
        not isinstance(after, list)
        or len(after) != len(shape)
        or not all(type(v) is t for v, t in zip(after, shape, strict=True))
        or not all(-_INT64 <= v < _INT64 for v in after if isinstance(v, int))
    ):
        raise InvalidArgument("page_token", "not a token this call gave out")
    return Page(page_size or default, tuple(after))


def paged(items: Iterable[T], page: Page, key: Callable[[T], Key]) -> tuple[list[T], str]:
    """A page of a small set held in memory (sorted here by ``key``)."""
    ordered = sorted(items, key=key)
    if page.after is not None:
        after = page.after
        ordered = [i for i in ordered if key(i) > after]
    return page.cut(ordered[: page.fetch()], key)
