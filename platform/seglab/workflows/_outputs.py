"""Small helpers the workflows share to write tables, JSON and progress."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from seglab.io.atomic import atomic_file
from seglab.logs import progress_bars_enabled

T = TypeVar("T")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def write_csv(
    path: str | os.PathLike[str], rows: Sequence[dict[str, Any]], columns: Sequence[str]
) -> Path:
    """Write rows as CSV with a header, atomically; floats keep full precision."""
    path = Path(path)
    with atomic_file(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _plain(v) for k, v in row.items()})
    return path


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON (numpy values converted), atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_plain, allow_nan=True) + "\n")
    return path


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr (rich); none under ``--quiet`` or with no terminal."""
    from rich.progress import track

    yield from track(
        items,
        description=description,
        total=total,
        transient=True,
        disable=not progress_bars_enabled(),
    )


def pyplot() -> Any:
    """Return matplotlib.pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 80) -> Path:
    """Lay out, save as PNG atomically, and close a matplotlib figure."""
    path = Path(path)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    return path


@contextlib.contextmanager
def phase_progress() -> Iterator[Callable[[str, float], None]]:
    """Yield a ``progress(phase, fraction)`` callback that drives one bar per phase on stderr."""
    from rich.progress import Progress

    with Progress(transient=True, disable=not progress_bars_enabled()) as bars:
        tasks: dict[str, Any] = {}

        def update(phase: str, fraction: float) -> None:
            if phase not in tasks:
                tasks[phase] = bars.add_task(phase, total=1.0)
            bars.update(tasks[phase], completed=fraction)

        yield update


@dataclass
class Summary:
    """What a workflow wrote: a title, lines of figures, and the output paths."""

    title: str
    out: Path
    lines: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)

    def report(self) -> str:
        """Human-readable report, ending with where the outputs are."""
        text = [self.title, *(f"  {line}" for line in self.lines)]
        if self.outputs:
            text.append(f"outputs in {self.out.resolve()}:")
            width = max(len(k) for k in self.outputs)
            text += [f"  {k:<{width}}  {p.resolve()}" for k, p in self.outputs.items()]
        return "\n".join(text)
