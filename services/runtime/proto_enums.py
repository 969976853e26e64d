"""States and outcomes as the protos' enums, from the words the domain keeps.

A domain state is a lower-case word ("pending_second_approval"); its proto
value is the enum's prefix and the word in capitals
(``APPLICATION_STATE_PENDING_SECOND_APPROVAL``), as buf's style names them.
"""

from __future__ import annotations

import re
from typing import Any

from services.runtime.errors import InvalidArgument

__all__ = ["enum_number", "enum_word", "word_of"]


# The generated enum classes (typed by mypy-protobuf each as its own wrapper
# class) are all protobuf EnumTypeWrappers at run time.
Enum = Any


def _prefix(enum: Enum) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.DESCRIPTOR.name).upper() + "_"


def enum_number(enum: Enum, word: str) -> Any:
    """The value for a domain word; "" (not set) is the UNSPECIFIED value 0."""
    if not word:
        return 0
    return enum.Value(_prefix(enum) + word.upper())  # ValueError: a word the enum lacks


def enum_word(enum: Enum, number: int, field: str) -> str:
    """The domain word for a value a caller sent; INVALID_ARGUMENT naming
    ``field`` for UNSPECIFIED or a number the schema does not have."""
    try:
        name = enum.Name(number)
    except ValueError:
        name = ""
    if number == 0 or not name:
        raise InvalidArgument(field, f"{number} is not a {enum.DESCRIPTOR.name}")
    return str(name).removeprefix(_prefix(enum)).lower()


def word_of(enum: Enum, number: int) -> str:
    """The domain word of a value an answer carries, for people to read."""
    try:
        return str(enum.Name(number)).removeprefix(_prefix(enum)).lower()
    except ValueError:
        return str(number)
