"""``seglab morphometry run|split|measure|compare``: mitochondria morphometry (study B)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Split, measure and compare mitochondria in SBF-SEM stacks (study B), in um.",
    no_args_is_help=True,
)


class MeshFormat(StrEnum):
    """Surface mesh file format (coordinates x, y, z in um), or no meshes."""

    ply = "ply"
    obj = "obj"
    stl = "stl"
    none = "none"


class FitMethod(StrEnum):
    """Spheroid fit: second moments (any orientation) or study B's projection method."""

    moments = "moments"
    published = "published"


class SplitMode(StrEnum):
    """Seeds and growth connected through z (3d) or each slice on its own (2d)."""

    three_d = "3d"
    two_d = "2d"


Triple = tuple[float, float, float]
VoxelSizeOption = Annotated[
    Triple | None,
    typer.Option(
        "--voxel-size",
        help="Voxel size Z Y X in um (default: the one stored in the TIFF).",
    ),
]
AxisOption = Annotated[
    Triple | None,
    typer.Option(
        "--axis",
        help="Myofibril direction Z Y X (default: estimated from the image, else along x).",
    ),
]
OutDirOption = Annotated[Path, typer.Option("--out", help="New folder for the outputs.")]
CellMaskOption = Annotated[
    Path | None,
    typer.Option(
        "--cell-mask",
        help="Stack of the cell (non-zero inside): adds the volume fraction of the cell.",
    ),
]
MeshOption = Annotated[MeshFormat, typer.Option(help="Mesh format, or none.")]
MethodOption = Annotated[FitMethod, typer.Option(help="Spheroid fit.")]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace the output if it exists.")
]
# Defaults repeat seglab.instances.SplitParams (which --help cannot import cheaply).
ObjectThreshold = Annotated[float, typer.Option(help="Object map threshold, 0..255 grey levels.")]
ContourThreshold = Annotated[float, typer.Option(help="Contour map threshold, 0..255 grey levels.")]
Sigma = Annotated[float, typer.Option(help="In-plane Gaussian blur of the seeds, in pixels.")]
SeedLevel = Annotated[
    float, typer.Option(help="Fraction of full intensity a blurred pixel keeps to be a seed.")
]
MinSize = Annotated[int, typer.Option(help="Smallest object kept, in voxels.")]
ModeOption = Annotated[SplitMode, typer.Option("--mode", help="3d or 2d splitting.")]


class Backend(StrEnum):
    """How the slabs and objects are processed: in this process, or as dask tasks."""

    serial = "serial"
    dask = "dask"


BackendOption = Annotated[
    Backend,
    typer.Option(
        help="serial, or dask (slabs and objects as parallel local processes; same results; "
        "needs pip install 'seglab[dask]').",
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(min=1, help="Processes with --backend dask (default: the number of CPUs)."),
]


def _parallel(backend: Backend, workers: int | None):  # noqa: ANN202 - imported lazily
    from seglab.workflows.morphometry import Parallelism

    return Parallelism(backend.value, workers)


def _split_params(
    object_threshold: float,
    contour_threshold: float,
    sigma: float,
    seed_level: float,
    min_size: int,
    mode: SplitMode,
):  # noqa: ANN202 - SplitParams is imported lazily
    from seglab.instances import SplitParams

    return SplitParams(
        object_threshold=object_threshold,
        contour_threshold=contour_threshold,
        sigma=sigma,
        seed_level=seed_level,
        min_size=min_size,
        mode=mode.value,
    )


@app.command("run")
def run(
    stack: Annotated[Path, typer.Argument(help="SEM stack (single-channel Z Y X TIFF).")],
    model: Annotated[
        str, typer.Option("--model", help="models:/NAME@ALIAS or models:/NAME/VERSION.")
    ],
    out: OutDirOption,
    voxel_size: VoxelSizeOption = None,
    axis: AxisOption = None,
    cell_mask: CellMaskOption = None,
    tta: Annotated[
        str, typer.Option(help="Test-time augmentation over rotations/flips: off, flips or all.")
    ] = "off",
    precision: Annotated[
        str,
        typer.Option(
            help="Network precision: float32, or bfloat16 (opt-in: faster on CPUs with bf16 "
            "instructions; a few voxels in ten thousand change)."
        ),
    ] = "float32",
    store: Annotated[
        Path | None,
        typer.Option(help="Embedded store folder (default ./mlruns; MLFLOW_TRACKING_URI wins)."),
    ] = None,
    object_threshold: ObjectThreshold = 128.0,
    contour_threshold: ContourThreshold = 128.0,
    sigma: Sigma = 1.0,
    seed_level: SeedLevel = 1.0,
    min_size: MinSize = 50,
    mode: ModeOption = SplitMode.three_d,
    method: MethodOption = FitMethod.moments,
    meshes: MeshOption = MeshFormat.ply,
    backend: BackendOption = Backend.serial,
    workers: WorkersOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Segment a stack with a registered mito model, split it into objects and measure them."""
    from seglab.tracking.store import resolve_store
    from seglab.workflows.morphometry import run_morphometry

    params = _split_params(object_threshold, contour_threshold, sigma, seed_level, min_size, mode)
    result = run_morphometry(
        resolve_store(store),
        model,
        stack,
        voxel_size,
        out,
        axis=axis,
        cell_mask=cell_mask,
        split_params=params,
        tta=tta,
        precision=precision,
        method=method.value,
        meshes=meshes.value,
        overwrite=overwrite,
        parallel=_parallel(backend, workers),
    )
    typer.echo(result.report())
    typer.echo(f"logged as run {result.run_id} (experiment morphometry)")


@app.command("split")
def split(
    object_map: Annotated[Path, typer.Argument(help="Object probability map (0..255 stack).")],
    contour_map: Annotated[Path, typer.Argument(help="Contour probability map (0..255 stack).")],
    out: Annotated[Path, typer.Option("--out", help="Labels TIFF to write.")],
    object_threshold: ObjectThreshold = 128.0,
    contour_threshold: ContourThreshold = 128.0,
    sigma: Sigma = 1.0,
    seed_level: SeedLevel = 1.0,
    min_size: MinSize = 50,
    mode: ModeOption = SplitMode.three_d,
    voxel_size: VoxelSizeOption = None,
    backend: BackendOption = Backend.serial,
    workers: WorkersOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Split object and contour probability maps into labelled mitochondria."""
    from seglab.workflows.morphometry import split_stack

    params = _split_params(object_threshold, contour_threshold, sigma, seed_level, min_size, mode)
    result = split_stack(
        object_map,
        contour_map,
        out,
        params,
        voxel_size=voxel_size,
        overwrite=overwrite,
        parallel=_parallel(backend, workers),
    )
    typer.echo(result.report())


@app.command("measure")
def measure(
    labels: Annotated[Path, typer.Argument(help="Instance labels (Z Y X TIFF, 0 background).")],
    out: OutDirOption,
    voxel_size: VoxelSizeOption = None,
    axis: AxisOption = None,
    image: Annotated[
        Path | None,
        typer.Option(help="SEM stack: gives the myofibril axis and the sarcomere length."),
    ] = None,
    cell_mask: CellMaskOption = None,
    method: MethodOption = FitMethod.moments,
    meshes: MeshOption = MeshFormat.ply,
    backend: BackendOption = Backend.serial,
    workers: WorkersOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Measure labelled objects: volumes, surfaces, spheroid fits, summary, figures, meshes."""
    from seglab.workflows.morphometry import measure_stack

    result = measure_stack(
        labels,
        voxel_size,
        out,
        axis=axis,
        image=image,
        cell_mask=cell_mask,
        method=method.value,
        meshes=meshes.value,
        overwrite=overwrite,
        parallel=_parallel(backend, workers),
    )
    typer.echo(result.report())


@app.command("compare")
def compare(
    folders: Annotated[
        list[Path], typer.Argument(help="Morphometry output folders (or summary.json files).")
    ],
    out: Annotated[Path, typer.Option("--out", help="CSV table to write (study B Table 3).")],
) -> None:
    """Compare stacks side by side as study B's Table 3."""
    from seglab.workflows.morphometry import compare_summaries

    table = compare_summaries(folders, out)
    for row in table:
        typer.echo(
            f"{row['stack']}: {row['imaged_volume_um']} um, {row['count']} objects "
            f"({row['count_interior']} interior), mean volume {row['mean_volume_um3']:.4f} um^3, "
            f"volume fraction {row['volume_fraction_percent']:.2f} %"
        )
    typer.echo(f"table: {out.resolve()}")
