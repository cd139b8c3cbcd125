"""Optuna search over the instance-splitting parameters against labelled stacks.

Study B chose its splitting parameters (thresholds, blur, seed level) by eye. Here an Optuna
study searches them against instance labels: every trial splits the object and contour
probability maps of each labelled stack with :func:`seglab.instances.split_instances_chunked`
and scores the result with instance F1 at IoU >= 0.5 (:func:`seglab.instances.instance_f1`)
or with the relative error of the volume fraction; the score is the mean over the stacks.
Each trial is a child run (parameters, per-stack scores) of the study's parent run, as in
:mod:`seglab.studies.search`; several workers can share the study the same way.

The maps come from a folder (``maps/object/<name>.tif`` and ``maps/contour/<name>.tif``, one
pair per labelled stack of ``data``), or are made once from ``data``'s images by a registered
model (:func:`seglab.workflows.morphometry.predict_maps`) and kept under the study's work
folder for every trial and worker.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seglab.errors import DataFileError, SeglabError
from seglab.instances import SplitParams, instance_f1, split_instances_chunked
from seglab.io.dataset import scan_dataset
from seglab.io.images import read_image, write_image
from seglab.studies.optuna_study import (
    TAG_TRIAL,
    default_out,
    join_study,
    resolve_storage,
    run_trials,
    sample,
    study_name,
)
from seglab.studies.recipes import PostprocessSearchRecipe
from seglab.studies.report import StudyResult
from seglab.studies.runner import Child, work_folder
from seglab.tracking.runs import tracked_run
from seglab.tracking.store import TrackingStore

__all__ = ["LabelledMaps", "load_labelled_maps", "run_postprocess_search", "score_split"]


@dataclass
class LabelledMaps:
    """One labelled stack: its probability maps (uint8 0..255) and true instance labels."""

    name: str
    object_map: np.ndarray
    contour_map: np.ndarray
    truth: np.ndarray


def _read_stack(path: Path, what: str) -> np.ndarray:
    array = read_image(path).array
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise DataFileError(
            f"{path} holds a {what} of shape {array.shape}, not a (Z, Y, X) stack",
            "give one single-channel stack per sample",
        )
    return array


def load_labelled_maps(data: Path, maps: Path) -> list[LabelledMaps]:
    """Pair every labelled stack of ``data`` with ``maps/object`` and ``maps/contour`` files."""
    samples = [s for s in scan_dataset(data).samples if s.label is not None]
    if not samples:
        raise SeglabError(f"{data} has no labelled stacks", "give instance labels in labels/")
    found = []
    for labelled in samples:
        pair = []
        for kind in ("object", "contour"):
            candidates = sorted((maps / kind).glob(f"{labelled.name}.tif*"))
            if not candidates:
                raise DataFileError(
                    f"no {kind} map for {labelled.name} in {maps / kind}",
                    f"write {kind}/{labelled.name}.tif (0..255), e.g. with `seglab segment`",
                )
            pair.append(_read_stack(candidates[0], f"{kind} map"))
        truth = _read_stack(Path(labelled.label), "label")
        if not pair[0].shape == pair[1].shape == truth.shape:
            raise DataFileError(
                f"{labelled.name}: maps {pair[0].shape} and {pair[1].shape} and labels "
                f"{truth.shape} differ in shape",
                "give maps of the labelled stacks themselves",
            )
        found.append(LabelledMaps(labelled.name, pair[0], pair[1], truth))
    return found


def _model_maps(store: TrackingStore, model_uri: str, data: Path, folder: Path) -> Path:
    """Segment ``data``'s stacks with a registered model once; return the maps folder."""
    from seglab.models.registry import load_model
    from seglab.workflows.morphometry import predict_maps

    model, version = load_model(store, model_uri)
    target = folder / f"maps-{version.name}-v{version.version}"
    done = target / "done.json"
    if done.is_file():
        return target
    for kind in ("object", "contour"):
        (target / kind).mkdir(parents=True, exist_ok=True)
    for labelled in scan_dataset(data).samples:
        if labelled.label is None:
            continue
        image = read_image(labelled.image)
        stack = image.array[None] if image.array.ndim == 2 else image.array
        object_map = np.zeros(stack.shape, np.uint8)
        contour_map = np.zeros(stack.shape, np.uint8)
        predict_maps(model, stack, object_map, contour_map)
        spacing = image.spacing if image.spacing is not None and len(image.spacing) == 3 else None
        write_image(target / "object" / f"{labelled.name}.tif", object_map, spacing, axes="ZYX")
        write_image(target / "contour" / f"{labelled.name}.tif", contour_map, spacing, axes="ZYX")
    done.write_text(json.dumps({"model": f"{version.name}/{version.version}"}) + "\n")
    return target


def _default_point(recipe: PostprocessSearchRecipe, defaults: SplitParams) -> dict[str, Any]:
    """Return the default split parameters as a point of the recipe's space."""
    point: dict[str, Any] = {}
    for parameter in recipe.space:
        value = getattr(defaults, parameter.name)
        if parameter.choices is not None:
            if value in parameter.choices:
                point[parameter.name] = value
            continue
        if parameter.low is not None and parameter.high is not None:
            value = min(max(value, parameter.low), parameter.high)
        point[parameter.name] = int(round(value)) if parameter.integer else float(value)
    return point


def score_split(stacks: list[LabelledMaps], params: SplitParams) -> dict[str, float]:
    """Split every stack with ``params``; return mean and per-stack scores.

    Returns
    -------
    dict
        ``instance_f1``, ``precision``, ``recall`` (means over stacks, IoU >= 0.5),
        ``volume_fraction_error`` (mean of ``|predicted - true| / true`` of the object voxel
        fraction), ``count`` and ``count_true``, and ``instance_f1/<stack>`` per stack.
    """
    scores: dict[str, float] = {}
    f1, precision, recall, fraction_error, count, count_true = [], [], [], [], 0, 0
    for stack in stacks:
        result = split_instances_chunked(stack.object_map, stack.contour_map, params)
        match = instance_f1(result.labels, stack.truth)
        f1.append(match.f1)
        precision.append(match.precision)
        recall.append(match.recall)
        true_fraction = float(np.count_nonzero(stack.truth)) / stack.truth.size
        found_fraction = float(np.count_nonzero(result.labels)) / stack.truth.size
        fraction_error.append(
            abs(found_fraction - true_fraction) / true_fraction if true_fraction else 0.0
        )
        count += result.count
        count_true += int(len(np.unique(stack.truth)) - (1 if (stack.truth == 0).any() else 0))
        scores[f"instance_f1/{stack.name}"] = match.f1
    scores |= {
        "instance_f1": float(np.mean(f1)),
        "precision": float(np.mean(precision)),
        "recall": float(np.mean(recall)),
        "volume_fraction_error": float(np.mean(fraction_error)),
        "count": float(count),
        "count_true": float(count_true),
    }
    return scores


def run_postprocess_search(
    store: TrackingStore,
    recipe: PostprocessSearchRecipe,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    fresh: bool = False,
    echo: Callable[[str], Any] = print,
    storage: str | None = None,
    trials: int | None = None,
    root: Path | None = None,
) -> StudyResult:
    """Search the splitting parameters (see the module docstring); resume or join the study.

    Parameters
    ----------
    store : TrackingStore
    recipe : PostprocessSearchRecipe
    out_dir : path-like, optional
        Report folder (default ``studies/<name>-<digest>/report``).
    fresh : bool
        Not supported (the state is the Optuna study); raises when True.
    echo : callable
    storage : str, optional
        Overrides the recipe's storage.
    trials : int, optional
        Most trials this worker runs (default: until the study has ``recipe.trials``).

    root : Path, optional
        Folder of the study work folders (default ``studies`` in the current folder).

    Returns
    -------
    StudyResult
        ``best`` holds the best parameters, the score and a command-line fragment.
    """
    import optuna

    if fresh:
        raise SeglabError(
            "a search resumes its Optuna study; --fresh does not apply",
            "change the recipe's name (a new study) or delete the study from the storage",
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = work_folder(recipe, root)
    maps = recipe.maps
    if maps is None:
        assert recipe.model is not None  # the recipe parser demands one of them
        echo(f"segmenting {recipe.data} with {recipe.model} (once)")
        maps = _model_maps(store, recipe.model, recipe.data, folder)
    stacks = load_labelled_maps(recipe.data, maps)
    echo(f"{len(stacks)} labelled stack(s): {', '.join(s.name for s in stacks)}")
    resolved = resolve_storage(storage or recipe.storage, store)
    direction = "maximize" if recipe.objective == "instance_f1" else "minimize"
    shared = join_study(
        store,
        recipe,
        resolved,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=recipe.sampler_seed),
        pruner=optuna.pruners.NopPruner(),
    )
    study, parent = shared.study, shared.parent
    echo(
        f"study {study_name(recipe)} ({'created' if shared.created else 'joined'}), "
        f"MLflow run {parent.run_id}"
    )
    defaults = SplitParams()
    if shared.created:
        # trial 0 is the defaults (clipped to the space): the search can only improve on them
        study.enqueue_trial(_default_point(recipe, defaults))

    def objective(trial: Any) -> float:
        values, _ = sample(trial, recipe.space)
        if "min_size" in values:
            values["min_size"] = int(round(values["min_size"]))
        params = SplitParams(**{**defaults.__dict__, **values})
        child = Child(f"trial={trial.number}", values, recipe.data)
        tags = {**parent.child_tags(child), TAG_TRIAL: str(trial.number)}
        started = time.perf_counter()
        with tracked_run(
            store,
            recipe.experiment,
            f"{recipe.name}-trial{trial.number}",
            params=params.__dict__,
            tags=tags,
        ) as run:
            trial.set_user_attr("mlflow_run_id", run.run_id)
            scores = score_split(stacks, params)
            scores["seconds"] = time.perf_counter() - started
            for key, value in scores.items():
                run.client.log_metric(run.run_id, key, value)
        value = scores[recipe.objective]
        echo(f"trial {trial.number}: {json.dumps(values)} -> {recipe.objective} {value:.4f}")
        return value

    def finish(best: dict[str, Any]) -> dict[str, Any]:
        chosen = {**defaults.__dict__, **best["params"]}
        flags = " ".join(
            f"--{k.replace('_', '-')} {chosen[k]:g}"
            for k in ("object_threshold", "contour_threshold", "sigma", "seed_level")
        )
        return {**best, "split_options": f"{flags} --min-size {int(round(chosen['min_size']))}"}

    result = run_trials(
        shared,
        objective,
        total=recipe.trials,
        trials=trials,
        out=default_out(recipe, out_dir, root),
        metric=recipe.objective,
        title=f"post-processing search {recipe.name}",
        echo=echo,
        finish=finish,
    )
    if result.best:
        result.lines.append(f"use: seglab morphometry split ... {result.best['split_options']}")
    return result
