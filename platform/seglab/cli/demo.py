"""``seglab demo OUT``: the platform's main job on phantoms, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    out: Annotated[Path, typer.Argument(help="Output folder for everything the demo writes.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT if it exists and is not empty.")
    ] = False,
) -> None:
    """Generate lung and SEM phantoms, tile, stitch and score them, remap SEM intensities."""
    from seglab.workflows.demo import run_demo

    result = run_demo(out, seed=seed, overwrite=overwrite)
    typer.echo(result.report())
