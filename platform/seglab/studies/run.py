"""Run any recipe: dispatch on its kind."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seglab.studies.recipes import Recipe
from seglab.studies.report import StudyResult
from seglab.tracking.store import TrackingStore

__all__ = ["run_recipe"]


def run_recipe(
    store: TrackingStore,
    recipe: Recipe,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    fresh: bool = False,
    echo: Callable[[str], Any] = print,
    **options: Any,
) -> StudyResult:
    """Run a recipe as a study (parent run + child runs), resuming an interrupted one.

    Parameters
    ----------
    store : TrackingStore
        Where the runs go.
    recipe : Recipe
        From :func:`seglab.studies.recipes.load_recipe`.
    out_dir : path-like, optional
        Folder for the study's tables and figures (also logged to the parent run); default
        ``studies/<name>-<digest>/report``.
    fresh : bool
        Start a new parent run instead of resuming this recipe's.
    echo : callable
        Receives progress lines.
    **options
        Passed to the kind's runner (e.g. ``storage`` for a search).

    Returns
    -------
    StudyResult
    """
    out = Path(out_dir) if out_dir is not None else None
    if recipe.kind == "tiling":
        from seglab.studies.tiling import run_tiling

        return run_tiling(store, recipe, out_dir=out, fresh=fresh, echo=echo, **options)
    if recipe.kind == "ablation":
        from seglab.studies.ablation import run_ablation

        return run_ablation(store, recipe, out_dir=out, fresh=fresh, echo=echo, **options)
    if recipe.kind == "search":
        from seglab.studies.search import run_search

        return run_search(store, recipe, out_dir=out, fresh=fresh, echo=echo, **options)
    from seglab.studies.postprocess import run_postprocess_search

    return run_postprocess_search(store, recipe, out_dir=out, fresh=fresh, echo=echo, **options)
