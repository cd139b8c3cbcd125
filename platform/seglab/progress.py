"""The progress callback the long-running functions of seglab accept."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ProgressCallback"]

#: ``progress(phase, fraction)``: called with a phase name and its completed fraction 0..1.
ProgressCallback = Callable[[str, float], None]
