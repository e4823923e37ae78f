"""Secret text: `SecretStr` and the `MASK` that stands in for every secret shown.

The lowest module of `etlkit.settings.connections`: it imports nothing of etlkit.
"""

from __future__ import annotations

import hmac
from typing import Any, Final

MASK: Final = "***"


class SecretStr:
    """A secret string: `repr`, `str` and formatting show `***`; `get_secret_value()` the text.

    Equality is by value. It pickles with its value (runs happen in child processes), so never
    pickle one anywhere a person could read it.

        >>> password = SecretStr("hunter2")
        >>> f"password={password}"
        'password=***'
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The secret text itself; hand it to drivers only, never to logs."""
        return self._value

    def __repr__(self) -> str:
        return repr(MASK)

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return format(MASK, format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretStr):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SecretStr, (self._value,))
