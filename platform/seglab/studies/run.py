"""Run any recipe: dispatch on its kind; guard the report folder of another study."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seglab.errors import OutputExistsError, SeglabError
from seglab.io.atomic import atomic_file, empty_folder
from seglab.studies.recipes import Recipe
from seglab.studies.report import StudyResult
from seglab.tracking.store import TrackingStore

__all__ = ["STUDY_MARKER", "run_recipe"]

#: File in a report folder naming the study that writes it (recipe name and digest).
STUDY_MARKER = ".seglab-study.json"


def run_recipe(
    store: TrackingStore,
    recipe: Recipe,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    fresh: bool = False,
    overwrite: bool = False,
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
        ``studies/<name>-<digest>/report``. The study keeps :data:`STUDY_MARKER` in it; a
        folder that holds other files, or the report of another study (another recipe name or
        content), is refused unless ``overwrite``. Its own report folder is rewritten when the
        study is run again (resumed, or searched by another worker).
    fresh : bool
        Start a new parent run instead of resuming this recipe's.
    overwrite : bool
        Empty a given ``out_dir`` that holds something else before the study starts.
    echo : callable
        Receives progress lines.
    **options
        Passed to the kind's runner (e.g. ``storage`` for a search).

    Returns
    -------
    StudyResult

    Raises
    ------
    OutputExistsError
        ``out_dir`` holds other files or another study's report, and ``overwrite`` is False.
    """
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        _claim_report_folder(out, recipe, overwrite=overwrite)
    try:
        return _run(store, recipe, out, fresh=fresh, echo=echo, **options)
    finally:
        if out is not None and out.is_dir():
            marker = {"study": recipe.name, "digest": recipe.digest, "kind": recipe.kind}
            with contextlib.suppress(OSError, SeglabError), atomic_file(out / STUDY_MARKER) as tmp:
                tmp.write_text(json.dumps(marker) + "\n")


def _run(
    store: TrackingStore,
    recipe: Recipe,
    out: Path | None,
    *,
    fresh: bool,
    echo: Callable[[str], Any],
    **options: Any,
) -> StudyResult:
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


def _claim_report_folder(out: Path, recipe: Recipe, *, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, empty) a report folder that is not this study's."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} exists and is not a folder", "choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        marker = json.loads((out / STUDY_MARKER).read_text())
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict):
        marker = None
    if marker is not None and (marker.get("study"), marker.get("digest")) == (
        recipe.name,
        recipe.digest,
    ):
        return  # this study's own report: rewritten as the study goes on
    if not overwrite:
        held = (
            f"the report of study {marker.get('study')!r} (recipe digest {marker.get('digest')})"
            if marker is not None
            else "files that are not a report of this study"
        )
        raise OutputExistsError(
            f"report folder {out} already holds {held}; this is study {recipe.name!r} (recipe "
            f"digest {recipe.digest})",
            "pass --overwrite to replace it, or choose another --out folder",
        )
    empty_folder(out)
