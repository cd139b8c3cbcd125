"""Routine analysis against the registry: evaluate and segment with ``models:/NAME@ALIAS``.

:func:`evaluate_registered` loads the model through MLflow's pyfunc loader, evaluates it
(:func:`seglab.workflows.analysis.evaluate_model`), writes the report atomically, logs an
evaluation run (experiment ``evaluations``: parameters, metrics linked to the model and to the
dataset digest, the report as artifacts) and records the key metric on the model version, where
the promotion gate reads it. :func:`segment_registered` writes label and probability maps.
:func:`describe_models` and :func:`describe_model` give the tables of ``seglab models``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from seglab.io.atomic import atomic_directory
from seglab.models.registry import (
    Evaluation,
    audit_trail,
    evaluations_of,
    iter_models,
    load_model,
    model_id_of,
    record_evaluation,
)
from seglab.tracking.runs import tracked_run
from seglab.tracking.store import TrackingStore
from seglab.workflows.analysis import ModelEvaluation, evaluate_model, segment

__all__ = [
    "RegisteredEvaluation",
    "describe_model",
    "describe_models",
    "evaluate_registered",
    "segment_registered",
]

EVALUATION_EXPERIMENT = "evaluations"


@dataclass(frozen=True)
class RegisteredEvaluation:
    """An evaluation of a registered model version."""

    evaluation: ModelEvaluation
    name: str
    version: str
    run_id: str
    out_dir: Path


def evaluate_registered(
    store: TrackingStore,
    uri: str,
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    tta: str = "off",
    precision: str = "float32",
    overwrite: bool = False,
) -> RegisteredEvaluation:
    """Evaluate a registered model on a labelled dataset; log and record the result.

    Parameters
    ----------
    store : TrackingStore
    uri : str
        ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``models:/NAME``.
    data : path-like
        Labelled dataset folder.
    out_dir : path-like
        New folder for report.md, CSV and PNG files (replaced only with ``overwrite``).
    tta : {"off", "flips", "all"}
    precision : {"float32", "bfloat16"}
        Network precision; ``"bfloat16"`` is opt-in (faster, changes a few pixels' class).
    overwrite : bool

    Returns
    -------
    RegisteredEvaluation
    """
    from mlflow.entities import Metric

    model, version = load_model(store, uri)
    name, number = version.name, str(version.version)
    params = {
        "model_uri": uri,
        "model": f"{name}/{number}",
        "data": str(data),
        "tta": tta,
        "precision": precision,
    }
    model_id = model_id_of(version)
    tags = {"seglab.model": f"{name}/{number}", "seglab.model_id": model_id or ""}
    # evaluate first: bad data is refused before a run is recorded
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        evaluation = evaluate_model(
            model,
            data,
            tmp,
            tta=tta,
            precision=precision,
            title=f"{name} version {number} on {Path(data).name}",
        )
    final = Path(out_dir)
    with tracked_run(store, EVALUATION_EXPERIMENT, f"eval-{name}", params=params, tags=tags) as run:
        run.client.log_artifacts(run.run_id, str(final), "evaluation")
        now = int(time.time() * 1000)
        metrics = [
            Metric(
                key,
                float(value),
                now,
                0,
                dataset_name=evaluation.dataset,
                dataset_digest=evaluation.digest[:36],
                model_id=model_id,
                run_id=run.run_id,
            )
            for key, value in evaluation.result.metrics.items()
            if value == value
        ]
        run.client.log_batch(run.run_id, metrics=metrics)
        run.client.set_tag(run.run_id, "seglab.eval_digest", evaluation.digest)
        record_evaluation(
            store,
            name,
            number,
            Evaluation(
                metric=evaluation.result.key_metric,
                value=float(evaluation.result.key_value),
                dataset=evaluation.dataset,
                digest=evaluation.digest,
                time=datetime.now(UTC).isoformat(timespec="seconds"),
                run_id=run.run_id,
            ),
        )
    return RegisteredEvaluation(evaluation, name, number, run.run_id, final)


def segment_registered(
    store: TrackingStore,
    uri: str,
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    tta: str = "off",
    precision: str = "float32",
    probabilities: str = "uint8",
    overwrite: bool = False,
) -> tuple[list[Path], str]:
    """Segment images with a registered model; return the files and ``NAME/VERSION``."""
    model, version = load_model(store, uri)
    files = segment(
        model,
        source,
        out_dir,
        tta=tta,
        precision=precision,
        probabilities=probabilities,
        overwrite=overwrite,
    )
    return files, f"{version.name}/{version.version}"


def describe_models(store: TrackingStore) -> list[dict[str, Any]]:
    """One row per registered model: name, versions, aliases, champion's metric."""
    client = store.client()
    rows = []
    for model in iter_models(store):
        versions = client.search_model_versions(f"name = '{model.name}'")
        aliases = dict(model.aliases or {})
        champion = aliases.get("champion")
        metric = ""
        for v in versions:
            if str(v.version) == str(champion):
                recorded = evaluations_of(v)
                if recorded:
                    latest = max(recorded.values(), key=lambda e: e.time)
                    metric = f"{latest.metric} {latest.value:.4f} ({latest.dataset})"
        rows.append(
            {
                "name": model.name,
                "versions": len(versions),
                "aliases": ", ".join(f"@{a}={v}" for a, v in sorted(aliases.items())) or "-",
                "champion metric": metric or "-",
            }
        )
    return rows


def describe_model(store: TrackingStore, name: str) -> tuple[list[dict[str, Any]], list[Any]]:
    """Versions of ``name`` (with aliases and recorded evaluations) and its audit trail."""
    from mlflow.exceptions import MlflowException

    from seglab.errors import SeglabError

    client = store.client()
    try:
        model = client.get_registered_model(name)
    except MlflowException as err:
        raise SeglabError(
            f"no registered model {name!r} in {store.tracking_uri}",
            "list them with `seglab models list`",
        ) from err
    by_version: dict[str, list[str]] = {}
    for alias, number in (model.aliases or {}).items():
        by_version.setdefault(str(number), []).append(f"@{alias}")
    rows = []
    versions = client.search_model_versions(f"name = '{name}'")
    for v in sorted(versions, key=lambda v: int(v.version)):
        recorded = evaluations_of(v)
        evaluations = "; ".join(
            f"{e.metric} {e.value:.4f} on {e.dataset} [{e.digest[:8]}]"
            for e in sorted(recorded.values(), key=lambda e: e.time)
        )
        rows.append(
            {
                "version": v.version,
                "aliases": " ".join(sorted(by_version.get(str(v.version), []))) or "-",
                "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).strftime(
                    "%Y-%m-%d %H:%M"
                ),
                "run": (v.run_id or "")[:12],
                "evaluations": evaluations or "-",
            }
        )
    return rows, audit_trail(store, name)
