"""``seglab run RECIPE`` and ``seglab search RECIPE``: studies from recipes (pipelines/*.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

RecipeArgument = Annotated[
    Path, typer.Argument(help="Recipe file (pipelines/*.yaml): tiling, ablation or search.")
]
StoreOption = Annotated[
    Path | None,
    typer.Option(help="Embedded store folder (default ./mlruns; MLFLOW_TRACKING_URI wins)."),
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Folder for the tables and figures (default studies/NAME-DIGEST/report)."
    ),
]
FreshOption = Annotated[
    bool,
    typer.Option(
        "--fresh", help="Start a new study run instead of resuming this recipe's earlier one."
    ),
]
OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace an --out folder that holds other files or another study's report.",
    ),
]
StorageOption = Annotated[
    str | None,
    typer.Option(
        help="Optuna storage: a database URL (sqlite:///..., postgresql://...) or journal:PATH "
        "(default: the recipe's, else mlruns/optuna.db).",
    ),
]


def run(
    recipe: RecipeArgument,
    out: OutOption = None,
    store: StoreOption = None,
    fresh: FreshOption = False,
    storage: StorageOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Run a recipe as a study: one parent MLflow run, one child run per training or trial.

    Run again after an interruption: finished children are found in MLflow and not repeated.
    """
    from seglab.studies.recipes import load_recipe
    from seglab.studies.run import run_recipe
    from seglab.tracking.store import resolve_store

    loaded = load_recipe(recipe)
    options = {"storage": storage} if loaded.kind.endswith("search") else {}
    if storage is not None and not options:
        typer.echo(f"note: --storage is for search recipes; {recipe} is a {loaded.kind} recipe")
    result = run_recipe(
        resolve_store(store),
        loaded,
        out_dir=out,
        fresh=fresh,
        overwrite=overwrite,
        echo=typer.echo,
        **options,
    )
    typer.echo(result.report())
    if result.failed:
        raise typer.Exit(1)


def search(
    recipe: RecipeArgument,
    storage: StorageOption = None,
    trials: Annotated[
        int | None,
        typer.Option(min=1, help="Trials this worker runs (default: the recipe's)."),
    ] = None,
    out: OutOption = None,
    store: StoreOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Run trials of a search recipe; start it in several processes or machines to share a study.

    Every worker names the same storage; the first creates the study and its MLflow run, the
    others join it. Each worker updates the study's summary when it finishes.
    """
    from seglab.errors import SeglabError
    from seglab.studies.recipes import load_recipe
    from seglab.studies.run import run_recipe
    from seglab.tracking.store import resolve_store

    loaded = load_recipe(recipe)
    if not loaded.kind.endswith("search"):
        raise SeglabError(
            f"{recipe} is a {loaded.kind} recipe, not a search",
            f"run it with `seglab run {recipe}`",
        )
    result = run_recipe(
        resolve_store(store),
        loaded,
        out_dir=out,
        overwrite=overwrite,
        echo=typer.echo,
        storage=storage,
        trials=trials,
    )
    typer.echo(result.report())
