"""Options of the phantom generators: a frozen config dataclass plus keyword overrides."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from seglab.errors import SeglabError

C = TypeVar("C")


def resolve_config(config: C | None, kind: type[C], overrides: dict[str, Any], what: str) -> C:
    """Return ``config`` (or ``kind()`` when None) with ``overrides`` applied.

    Parameters
    ----------
    config : dataclass instance of ``kind``, optional
    kind : type
        The frozen config dataclass.
    overrides : dict
        Field names and values to replace; unknown names are a clear error listing the fields.
    what : str
        Name of the generator for messages ("lung phantom").
    """
    if config is None:
        config = kind()
    elif not isinstance(config, kind):
        raise SeglabError(
            f"config must be a {kind.__name__}, got {type(config).__name__}",
            f"build one with {kind.__name__}(...) or pass options as keywords",
        )
    names = [f.name for f in dataclasses.fields(kind)]  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise SeglabError(
            f"unknown {what} option(s) {', '.join(unknown)}",
            f"use fields of {kind.__name__}: {', '.join(sorted(names))}",
        )
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return dataclasses.replace(config, **overrides) if overrides else config  # type: ignore[type-var]
