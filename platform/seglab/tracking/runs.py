"""Runs in the tracking store: their lifecycle, parameters, environment and dataset inputs.

Everything goes through an explicit ``MlflowClient`` bound to a :class:`TrackingStore`; the
fluent ``mlflow.*`` API and its process-global active run are never used, so runs of different
stores, threads or nested studies cannot leak into each other, and no ``mlflow.db`` appears in
the current folder.

A run is opened by :func:`tracked_run`: dead runs of the experiment are failed first, the new
run gets a unique non-numeric name, owner tags (host, pid, start time) and environment tags
(git commit, package versions), and it ends FINISHED, or FAILED with the one-line reason when the
block raises (KILLED on Ctrl+C).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seglab.tracking.store import (
    TAG_FAILURE,
    TrackingStore,
    ensure_experiment,
    fail_dead_runs,
    owner_tags,
    unique_run_name,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: Packages whose versions are recorded on every run.
RECORDED_PACKAGES = ("seglab", "torch", "monai", "mlflow", "optuna", "numpy", "scikit-image")

#: MLflow's limits: characters per parameter value, parameters per batch call.
MAX_PARAM_LENGTH = 6000
MAX_PER_BATCH = 100


@dataclass(frozen=True)
class RunHandle:
    """An open run: where it lives and how to reach it."""

    store: TrackingStore
    experiment_id: str
    run_id: str
    run_name: str

    @property
    def client(self) -> MlflowClient:
        """The store's client."""
        return self.store.client()


def git_tags(folder: str | Path | None = None) -> dict[str, str]:
    """Git commit (and whether the work tree had changes) of ``folder``'s repository, if any."""
    cwd = Path(folder) if folder is not None else Path.cwd()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    tags = {"mlflow.source.git.commit": commit.stdout.strip()}
    if dirty.returncode == 0:
        tags["seglab.git.dirty"] = str(bool(dirty.stdout.strip())).lower()
    return tags


def environment_tags() -> dict[str, str]:
    """Python, platform and package versions, as tags ``seglab.version.<package>``."""
    tags = {
        "seglab.python": platform.python_version(),
        "seglab.platform": platform.platform(),
    }
    for package in RECORDED_PACKAGES:
        try:
            tags[f"seglab.version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return tags


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested parameters to ``{"a.b.c": "value"}`` strings within MLflow's limits.

    Lists and other values are written as JSON; values longer than MLflow's 6000 characters are
    cut and end with ``"...[cut]"``.
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat |= flatten_params(value, name)
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > MAX_PARAM_LENGTH:
            text = text[: MAX_PARAM_LENGTH - 8] + "...[cut]"
        flat[name] = text
    return flat


def log_params(handle: RunHandle, params: Mapping[str, Any]) -> dict[str, str]:
    """Log (nested) parameters in batches of 100; return what was logged."""
    from mlflow.entities import Param

    flat = flatten_params(params)
    items = [Param(k, v) for k, v in flat.items()]
    client = handle.client
    for start in range(0, len(items), MAX_PER_BATCH):
        client.log_batch(handle.run_id, params=items[start : start + MAX_PER_BATCH])
    return flat


def log_dataset(
    handle: RunHandle,
    name: str,
    manifest_path: str | Path,
    *,
    context: str = "training",
) -> str:
    """Record a dataset folder as a run input, identified by its manifest's digest.

    Parameters
    ----------
    handle : RunHandle
    name : str
        Dataset name shown in the MLflow UI.
    manifest_path : path-like
        The dataset's ``manifest.json`` (``seglab.io.dataset.write_manifest``): its SHA-256
        covers every file's digest, so equal digests mean identical data.
    context : str
        ``"training"``, ``"validation"`` or ``"evaluation"`` (an input tag, as ``mlflow.data``).

    Returns
    -------
    str
        The digest recorded (the first 16 hex digits of the manifest's SHA-256, as MLflow's
        own datasets shorten theirs).
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    path = Path(manifest_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    dataset = Dataset(
        name=name,
        digest=digest,
        source_type="local",
        source=json.dumps({"uri": str(path.parent.resolve())}),
    )
    tags = [InputTag("mlflow.data.context", context)]
    handle.client.log_inputs(handle.run_id, datasets=[DatasetInput(dataset, tags)])
    return digest


def open_run(
    store: TrackingStore,
    experiment: str,
    name_prefix: str,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> RunHandle:
    """Open a run; close it with :func:`close_run` (or use :func:`tracked_run`).

    Parameters
    ----------
    store : TrackingStore
    experiment : str
        Experiment name; created with an explicit artifact location when missing.
    name_prefix : str
        Start of the unique run name (e.g. ``"lung-unet"``).
    params : mapping, optional
        Parameters to log at once (nested mappings are flattened with dots).
    tags : mapping, optional
        Extra tags.
    parent_run_id : str, optional
        Makes this a child run (tag ``mlflow.parentRunId``), e.g. one arm of an ablation.

    Returns
    -------
    RunHandle
    """
    experiment_id = ensure_experiment(store, experiment)
    fail_dead_runs(store, [experiment_id])
    run_name = unique_run_name(name_prefix)
    all_tags = owner_tags() | environment_tags() | git_tags() | dict(tags or {})
    if parent_run_id is not None:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = store.client().create_run(experiment_id, run_name=run_name, tags=all_tags)
    handle = RunHandle(store, experiment_id, run.info.run_id, run_name)
    if params:
        try:
            log_params(handle, params)
        except BaseException as err:
            close_run(handle, err)
            raise
    return handle


def close_run(handle: RunHandle, error: BaseException | None = None) -> None:
    """End a run: FINISHED, KILLED for Ctrl+C, or FAILED with the error's one-line reason."""
    client = handle.client
    if error is None:
        client.set_terminated(handle.run_id, status="FINISHED")
        return
    if isinstance(error, KeyboardInterrupt):
        client.set_tag(handle.run_id, TAG_FAILURE, "interrupted")
        client.set_terminated(handle.run_id, status="KILLED")
        return
    reason = " ".join(f"{type(error).__name__}: {error}".split())[:500]
    client.set_tag(handle.run_id, TAG_FAILURE, reason)
    client.set_terminated(handle.run_id, status="FAILED")


@contextlib.contextmanager
def tracked_run(
    store: TrackingStore,
    experiment: str,
    name_prefix: str,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[RunHandle]:
    """Open a run (see :func:`open_run`), yield it, and close it with a truthful status."""
    handle = open_run(
        store, experiment, name_prefix, params=params, tags=tags, parent_run_id=parent_run_id
    )
    try:
        yield handle
    except BaseException as err:
        close_run(handle, err)
        raise
    close_run(handle)
