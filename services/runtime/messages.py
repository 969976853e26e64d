"""Building a protobuf message whose type is a type variable."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from google.protobuf.message import Message

__all__ = ["build"]

T = TypeVar("T", bound=Message)


def build(message_type: type[T], **fields: Any) -> T:
    """``message_type(**fields)``: the stubs type ``Message()`` without fields, so a
    call through a type variable needs this one cast, here rather than at each caller."""
    return cast(T, cast(Any, message_type)(**fields))
