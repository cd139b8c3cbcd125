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
    store: Annotated[
        Path | None,
        typer.Option(help="Embedded store folder (default ./mlruns; MLFLOW_TRACKING_URI wins)."),
    ] = None,
    training: Annotated[
        bool,
        typer.Option(
            "--training/--no-training",
            help="Train, register, promote and evaluate both bundles (about 4 minutes).",
        ),
    ] = True,
) -> None:
    """Phantoms, tiling and remap baselines, then train, register, promote and evaluate."""
    from seglab.demo import DemoTraining, run_demo

    result = run_demo(
        out,
        seed=seed,
        overwrite=overwrite,
        store=store,
        training=DemoTraining() if training else None,
    )
    typer.echo(result.report())
