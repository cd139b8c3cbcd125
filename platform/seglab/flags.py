"""Reading on/off settings that may arrive as words from a command line.

``python -m monai.bundle run --resume true`` hands a bundle the *string* ``"true"`` (fire does
not convert it), and ``"false"`` is truthy in Python; :func:`as_bool` reads both forms.
"""

from __future__ import annotations

from typing import Any

from seglab.errors import SeglabError

__all__ = ["as_bool"]

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def as_bool(value: Any, name: str = "value") -> bool:
    """Return ``value`` as a bool: a bool, 0/1, or one of the words true/false, yes/no, on/off.

    Raises
    ------
    SeglabError
        For anything else (naming ``name``).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise SeglabError(f"{name} must be true or false, got {value!r}", f"pass {name}=true or false")
