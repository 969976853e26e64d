"""Pages by key: every item once, in order, whatever the page size; a token
only as the service gave it out."""

from __future__ import annotations

import base64

import pytest

from services.runtime.errors import InvalidArgument
from services.runtime.paging import page_of, paged

ITEMS = [(i // 3, f"id-{i:02}") for i in range(10)]  # keys that tie on their first part


@pytest.mark.parametrize("size", [1, 2, 3, 4, 9, 10, 11])
def test_pages_give_every_item_once_in_order(size: int) -> None:
    seen, token, pages = [], "", 0
    while True:
        page = page_of(size, token, (int, str))
        items, token = paged(reversed(ITEMS), page, lambda item: item)
        assert len(items) <= size
        seen += items
        pages += 1
        if not token:
            break
    assert seen == ITEMS
    assert pages == max(1, -(-len(ITEMS) // size))


def test_an_item_added_before_the_cursor_shifts_nothing() -> None:
    first, token = paged(ITEMS, page_of(4, "", (int, str)), lambda item: item)
    rest, _ = paged([(0, "id-00a"), *ITEMS], page_of(100, token, (int, str)), lambda item: item)
    assert first + rest == ITEMS


def test_the_default_and_the_most() -> None:
    assert page_of(0, "", (str,)).size == 50
    assert page_of(0, "", (str,), default=20).size == 20
    with pytest.raises(InvalidArgument) as refused:
        page_of(101, "", (str,))
    assert refused.value.field == "page_size"


@pytest.mark.parametrize(
    "token",
    [
        "!!",  # not base64
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),  # not a key
        base64.urlsafe_b64encode(b"[1]").decode(),  # too short
        base64.urlsafe_b64encode(b'["1", "x"]').decode(),  # wrong type
        base64.urlsafe_b64encode(b'[true, "x"]').decode(),  # a bool is no int here
        base64.urlsafe_b64encode(b'[9223372036854775808, "x"]').decode(),  # past bigint
    ],
)
def test_a_token_it_did_not_give_out_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        page_of(10, token, (int, str))
    assert refused.value.field == "page_token"
