"""``seglab evaluate`` and ``seglab segment``: routine analysis with a registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelOption = Annotated[
    str,
    typer.Option(
        "--model", help="models:/NAME@champion, models:/NAME@candidate or models:/NAME/VERSION."
    ),
]
StoreOption = Annotated[
    Path | None,
    typer.Option(help="Embedded store folder (default ./mlruns; MLFLOW_TRACKING_URI wins)."),
]
TtaOption = Annotated[
    str, typer.Option(help="Test-time augmentation over rotations/flips: off, flips or all.")
]
PrecisionOption = Annotated[
    str,
    typer.Option(
        help="Network precision: float32, or bfloat16 (opt-in: faster on CPUs with bf16 "
        "instructions; a few pixels in ten thousand change class)."
    ),
]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace OUT if it exists and is not empty.")
]


def evaluate(
    model: ModelOption,
    data: Annotated[Path, typer.Option("--data", help="Labelled dataset folder.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the report.")],
    tta: TtaOption = "off",
    precision: PrecisionOption = "float32",
    store: StoreOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Evaluate a registered model: study-A Dice table or study-B threshold sweep."""
    from seglab.tracking.store import resolve_store
    from seglab.workflows.routine import evaluate_registered

    done = evaluate_registered(
        resolve_store(store), model, data, out, tta=tta, precision=precision, overwrite=overwrite
    )
    result = done.evaluation.result
    typer.echo(
        f"{done.name} version {done.version} on {done.evaluation.dataset} "
        f"({len(done.evaluation.samples)} samples, digest {done.evaluation.digest[:12]})"
    )
    typer.echo(f"  {result.key_metric} = {result.key_value:.4f}")
    for key, value in sorted(result.metrics.items()):
        if key != result.key_metric:
            typer.echo(f"  {key:<22} {value:.4f}")
    typer.echo(f"report: {(done.out_dir / 'report.md').resolve()}")
    typer.echo(f"logged as run {done.run_id} (experiment evaluations); recorded on the version")


def segment(
    model: ModelOption,
    source: Annotated[Path, typer.Argument(help="Image, stack, or folder of images.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for label/probability maps.")],
    tta: TtaOption = "off",
    precision: PrecisionOption = "float32",
    probabilities: Annotated[
        str, typer.Option(help="Probability maps: uint8 (0..255), float32 (0..1) or none.")
    ] = "uint8",
    store: StoreOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Segment images or stacks with a registered model."""
    from seglab.tracking.store import resolve_store
    from seglab.workflows.routine import segment_registered

    files, version = segment_registered(
        resolve_store(store),
        model,
        source,
        out,
        tta=tta,
        precision=precision,
        probabilities=probabilities,
        overwrite=overwrite,
    )
    typer.echo(f"segmented {source} with {version}: {len(files)} files in {out.resolve()}")
