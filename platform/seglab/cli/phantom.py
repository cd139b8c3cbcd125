"""``seglab phantom lung|sem OUT``: write synthetic datasets with exact ground truth."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Write synthetic datasets with exact ground truth (study A lung, study B SEM).",
    no_args_is_help=True,
)

Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace OUT if it exists and is not empty.")
]
Seed = Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")]


class Cell(StrEnum):
    """Which simulated cell: A (the training cell) or B (the new cell, other appearance)."""

    A = "A"
    B = "B"


@app.command("lung")
def lung(
    out: Annotated[Path, typer.Argument(help="Output dataset folder.")],
    count: Annotated[int, typer.Option(min=1, help="Number of images.")] = 4,
    size: Annotated[
        int,
        typer.Option(min=64, help="Image size in pixels (the study: 1024 after resizing)."),
    ] = 1024,
    seed: Seed = 0,
    overwrite: Overwrite = False,
) -> None:
    """Lung immunofluorescence phantoms: RGB images, colour-coded 6-class labels."""
    from seglab.workflows.phantoms import write_lung_phantoms

    summary = write_lung_phantoms(out, count=count, size=size, seed=seed, overwrite=overwrite)
    typer.echo(summary.report())


@app.command("sem")
def sem(
    out: Annotated[Path, typer.Argument(help="Output dataset folder.")],
    shape: Annotated[tuple[int, int, int], typer.Option(help="Stack shape Z Y X in voxels.")] = (
        32,
        128,
        128,
    ),
    voxel_size: Annotated[
        tuple[float, float, float] | None,
        typer.Option(help="Voxel size Z Y X in um (default: the phantom's own)."),
    ] = None,
    cell: Annotated[Cell, typer.Option(help="Simulated cell.")] = Cell.A,
    axis: Annotated[tuple[float, float, float], typer.Option(help="Myofibril direction Z Y X.")] = (
        0.0,
        0.0,
        1.0,
    ),
    extracellular: Annotated[
        bool, typer.Option(help="Include extracellular space (very dark and bright areas).")
    ] = False,
    seed: Seed = 0,
    count: Annotated[
        int, typer.Option(min=1, help="Number of stacks (seeds SEED, SEED+1, ...).")
    ] = 1,
    overwrite: Overwrite = False,
) -> None:
    """SBF-SEM stack phantom: image, instance labels, contours and a truth table."""
    from seglab.workflows.phantoms import write_sem_phantom

    summary = write_sem_phantom(
        out,
        shape=shape,
        voxel_size=voxel_size,
        cell=cell.value,
        axis=axis,
        extracellular=extracellular,
        seed=seed,
        count=count,
        overwrite=overwrite,
    )
    typer.echo(summary.report())
