"""``seglab train BUNDLE --data DIR``: train a bundle, log it to MLflow, optionally register it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def train(
    bundle: Annotated[str, typer.Argument(help="Bundle name (lung, mito) or bundle folder.")],
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (images/, labels/).")],
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Config override KEY=VALUE (JSON values; nested ids with #); repeatable, "
            "e.g. --set epochs=20 --set network_name=segnet.",
        ),
    ] = None,
    register: Annotated[
        str | None, typer.Option(help="Register the trained model under this name.")
    ] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option(
            help="Labelled dataset for the final evaluation recorded on the model "
            "(default: the validation split of DATA)."
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(help="Embedded store folder (default ./mlruns; MLFLOW_TRACKING_URI wins)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Checkpoint folder (default: checkpoints/BUNDLE).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last epoch checkpoint in OUTPUT.")
    ] = False,
    trust: Annotated[
        bool,
        typer.Option("--trust", help="Allow a bundle from outside seglab's bundles/ folder."),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace OUTPUT's earlier training (without --resume) if any."
        ),
    ] = False,
) -> None:
    """Train BUNDLE on DATA; every run lands in MLflow with its model and final evaluation."""
    from seglab.workflows.training import parse_overrides, train_bundle

    values = parse_overrides(overrides or [])
    if resume:
        values["resume"] = True
    outcome = train_bundle(
        bundle,
        data,
        overrides=values,
        register=register,
        eval_data=eval_data,
        store_dir=store,
        output_dir=output,
        trust=trust,
        overwrite=overwrite,
    )
    typer.echo(f"run {outcome.run_id}: model {outcome.model_id}")
    for key, value in sorted(outcome.metrics.items()):
        typer.echo(f"  {key:<24} {value:.4f}")
    if outcome.registered:
        name, version = outcome.registered.split("/")
        typer.echo(f"registered {name} version {version} (models:/{name}/{version})")
        typer.echo(f"promote it with: seglab models promote {name} {version}")
    typer.echo(f"checkpoints in {outcome.output_dir.resolve()}")
