"""An ignite handler that records a MONAI training in the tracking store.

MONAI's own MLflow handler logs little (no hyper-parameters, no dataset digests, no tags) and,
without a run name, appends to any unfinished run of the experiment (ECOSYSTEM.md). This one
opens its own run when training starts (:func:`seglab.tracking.runs.open_run`: unique name,
owner, git and package tags, parameters, dataset digest), logs per-epoch metrics of the trainer
and of the validator (a per-class metric becomes one metric per class), and at the end logs the
learning curves (``learning_curves.png`` and ``history.csv``) and the bundle's configs, runs the
*finishers* (e.g. :class:`seglab.workflows.training.ModelPublisher`: final evaluation, logged
model, registration) and ends the run FINISHED, or FAILED with the reason when anything raises.
A training resumed from a checkpoint opens a new run (never appends to the old one, which
:func:`~seglab.tracking.runs.open_run` marks FAILED if its process died) tagged with the epoch it
resumed from (``seglab.resumed_from_epoch``) and the run that wrote that checkpoint
(``seglab.resumed_from_run``).
"""

from __future__ import annotations

import csv
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from seglab.flags import as_bool
from seglab.tracking.runs import RunHandle, close_run, log_dataset, open_run
from seglab.tracking.store import resolve_store

#: Called at the end of a successful training, before the run is closed.
Finisher = Callable[[RunHandle, Any], None]


class RunLogger:
    """Record a training run in MLflow; attach to a MONAI/ignite trainer.

    Parameters
    ----------
    experiment : str
        MLflow experiment name.
    run_prefix : str
        Start of the unique run name.
    params : mapping, optional
        Hyper-parameters to log (nested mappings become dotted names).
    store_dir : path-like, optional
        Embedded store folder (default ``./mlruns``); ``MLFLOW_TRACKING_URI`` or
        ``tracking_uri`` replace it.
    tracking_uri : str, optional
    evaluator : ignite Engine, optional
        The validation engine; its metrics are logged as they are after each epoch (attach this
        handler after the ``ValidationHandler`` so they are fresh).
    dataset_dir : path-like, optional
        Dataset folder; when it holds a ``manifest.json`` its digest is logged as the training
        input.
    enabled : bool
        False makes the handler do nothing (e.g. ``--tracking_enabled false``).
    class_names : sequence of str, optional
        Names for the entries of per-class metrics (a metric ``val_class_dice`` of K values is
        logged as ``val_class_dice_<name>``); entries are numbered when not given.
    configs_dir : path-like, optional
        The bundle's ``configs/`` folder, logged as artifacts ``bundle/configs``.
    finishers : sequence of callables, optional
        ``finisher(handle, engine)`` run in order when training completes, before the run is
        closed; an error in one fails the run.
    tags : mapping, optional
        Extra run tags, e.g. ``mlflow.parentRunId`` to nest the run under a study's run.

    Notes
    -----
    The run's id is put on the trainer as ``engine.state.tracking_run_id`` (the epoch checkpoint
    records it). A resumed trainer carries ``state.resumed_from_epoch`` and
    ``state.resumed_from_run`` (set by :class:`seglab.bundle.ResumeFromCheckpoint`, which must be
    attached first); they become the tags ``seglab.resumed_from_epoch`` and
    ``seglab.resumed_from_run``.

    A trainer stopped early by a pruner (``engine.state.seglab_pruned`` set, see
    :class:`seglab.studies.search.PruningHandler`) ends FINISHED with the tag
    ``seglab.pruned=true`` and without running the finishers (no model is published).
    """

    def __init__(
        self,
        experiment: str,
        run_prefix: str,
        params: Mapping[str, Any] | None = None,
        store_dir: str | os.PathLike[str] | None = None,
        tracking_uri: str | None = None,
        evaluator: Any = None,
        dataset_dir: str | os.PathLike[str] | None = None,
        enabled: bool = True,
        class_names: Sequence[str] | None = None,
        configs_dir: str | os.PathLike[str] | None = None,
        finishers: Sequence[Finisher] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        self.experiment = experiment
        self.run_prefix = run_prefix
        self.params = dict(params or {})
        self.store_dir = store_dir
        self.tracking_uri = tracking_uri
        self.evaluator = evaluator
        self.dataset_dir = dataset_dir
        self.enabled = as_bool(enabled, "enabled")
        self.class_names = list(class_names) if class_names is not None else None
        self.configs_dir = configs_dir
        self.finishers = list(finishers or [])
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.handle: RunHandle | None = None
        self.last_run_id: str | None = None
        self.history: list[dict[str, float]] = []
        self._losses: list[float] = []

    def attach(self, engine: Any) -> None:
        """Register on the trainer's STARTED, ITERATION/EPOCH_COMPLETED, COMPLETED, EXCEPTION."""
        from ignite.engine import Events

        if not self.enabled:
            return
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def started(self, engine: Any) -> None:
        """Open the run (once: a resumed engine fires STARTED again)."""
        if self.handle is not None:
            return
        store = resolve_store(self.store_dir, tracking_uri=self.tracking_uri)
        params = self.params | {"max_epochs": engine.state.max_epochs}
        resumed = getattr(engine.state, "resumed_from_epoch", None)
        resumed_run = getattr(engine.state, "resumed_from_run", None)
        # the command line holds the overrides of `python -m monai.bundle run --id value`
        tags = {"seglab.command": shlex.join(sys.argv)[:5000], **self.tags}
        if resumed:
            tags["seglab.resumed_from_epoch"] = str(resumed)
            if resumed_run:
                tags["seglab.resumed_from_run"] = str(resumed_run)
        self.handle = open_run(store, self.experiment, self.run_prefix, params=params, tags=tags)
        self.last_run_id = self.handle.run_id
        engine.state.tracking_run_id = self.handle.run_id
        if self.dataset_dir is not None:
            manifest = Path(self.dataset_dir) / "manifest.json"
            if manifest.is_file():
                log_dataset(self.handle, Path(self.dataset_dir).name, manifest)

    def iteration_completed(self, engine: Any) -> None:
        """Collect the iteration's loss for the epoch mean."""
        loss = _loss_of(engine.state.output)
        if loss is not None:
            self._losses.append(loss)

    def epoch_completed(self, engine: Any) -> None:
        """Log the epoch's mean loss, the trainer's and the validator's metrics, the lr."""
        from mlflow.entities import Metric

        if self.handle is None:
            return
        epoch = int(engine.state.epoch)
        values: dict[str, float] = {}
        if self._losses:
            values["train_loss"] = sum(self._losses) / len(self._losses)
        self._losses = []
        values |= _scalars(engine.state.metrics, self.class_names)
        if self.evaluator is not None and getattr(self.evaluator.state, "epoch", 0):
            values |= _scalars(self.evaluator.state.metrics, self.class_names)
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is not None and optimizer.param_groups:
            values["learning_rate"] = float(optimizer.param_groups[0]["lr"])
        self.history.append({"epoch": float(epoch)} | values)
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, epoch) for k, v in values.items() if math.isfinite(v)]
        self.handle.client.log_batch(self.handle.run_id, metrics=metrics)

    def completed(self, engine: Any) -> None:
        """Log the learning curves and configs, run the finishers, end the run FINISHED."""
        if self.handle is None:
            return
        handle = self.handle
        pruned = bool(getattr(engine.state, "seglab_pruned", False))
        try:
            self._log_artifacts(handle)
            if pruned:
                handle.client.set_tag(handle.run_id, "seglab.pruned", "true")
            for finisher in [] if pruned else self.finishers:
                finisher(handle, engine)
        except BaseException as error:
            close_run(handle, error)
            self.handle = None
            raise
        close_run(handle)
        self.handle = None

    def _log_artifacts(self, handle: RunHandle) -> None:
        client = handle.client
        if self.configs_dir is not None and Path(self.configs_dir).is_dir():
            client.log_artifacts(handle.run_id, str(self.configs_dir), "bundle/configs")
        if not self.history:
            return
        with tempfile.TemporaryDirectory(prefix="seglab-run-") as tmp:
            folder = Path(tmp)
            write_history(folder / "history.csv", self.history)
            plot_learning_curves(folder / "learning_curves.png", self.history)
            client.log_artifacts(handle.run_id, str(folder), "training")

    def exception_raised(self, engine: Any, error: BaseException) -> None:
        """End the run FAILED (KILLED on Ctrl+C) and let the error go on."""
        if self.handle is not None:
            close_run(self.handle, error)
            self.handle = None
        raise error


def _loss_of(output: Any) -> float | None:
    """Return the loss in a MONAI engine output (a dict, or a list of dicts after decollation)."""
    if isinstance(output, list | tuple) and output:
        output = output[0]
    if isinstance(output, Mapping) and "loss" in output:
        value = output["loss"]
        return float(value.item() if hasattr(value, "item") else value)
    return None


def _scalars(
    metrics: Mapping[str, Any], class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Flatten engine metrics to floats; a vector metric gives one entry per class."""
    out = {}
    for name, value in metrics.items():
        values = value.detach().cpu().reshape(-1).tolist() if hasattr(value, "detach") else value
        if isinstance(values, list | tuple):
            if len(values) == 1:
                values = values[0]
            else:
                for i, item in enumerate(values):
                    label = class_names[i] if class_names and i < len(class_names) else str(i)
                    try:
                        out[f"{name}_{label}"] = float(item)
                    except (TypeError, ValueError):
                        continue
                continue
        try:
            out[str(name)] = float(values)
        except (TypeError, ValueError):
            continue
    return out


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """Write the per-epoch values as CSV (one row per epoch; blank where a value is missing)."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in columns})


def plot_learning_curves(path: Path, history: list[dict[str, float]]) -> None:
    """Plot loss (left) and every Dice/F metric (right) against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [row["epoch"] for row in history]
    keys = list(dict.fromkeys(k for row in history for k in row if k != "epoch"))
    losses = [k for k in keys if "loss" in k]
    scores = [k for k in keys if k not in losses and k != "learning_rate"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key in losses:
        left.plot(epochs, [row.get(key, math.nan) for row in history], marker=".", label=key)
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    for key in scores:
        right.plot(epochs, [row.get(key, math.nan) for row in history], marker=".", label=key)
    right.set(xlabel="epoch", ylabel="score", title="metrics", ylim=(0, 1))
    for axis in (left, right):
        if axis.lines:
            axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
