"""Training a bundle end to end: the run's final evaluation, its logged model, registration.

:class:`ModelPublisher` is a finisher of :class:`seglab.tracking.handlers.RunLogger` (bundle
configs list it in ``finishers``): when training completes it logs the best checkpoint as a
pyfunc model on the run, loads that logged model back through MLflow, evaluates it on the
validation split with the same code as ``seglab evaluate`` (:func:`evaluate_model`), logs the
per-class table, figures and ``final_*`` metrics (linked to the model and the dataset digest),
and, given a name, registers the model and records the evaluation on the new version for the
promotion gate.

:func:`train_bundle` runs a bundle's training the way ``python -m monai.bundle run`` does (a
MONAI :class:`~monai.bundle.ConfigWorkflow`), with ``--set`` overrides checked against the
config first, and returns what the run produced.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seglab.errors import OutputExistsError, SeglabError
from seglab.io.atomic import empty_folder
from seglab.io.dataset import scan_dataset
from seglab.logs import progress_bars_enabled, quieten_consoles, reattach
from seglab.models.publish import (
    LoggedBundleModel,
    log_model,
    quiet_artifact_progress,
    register_model,
)
from seglab.models.pyfunc import MemberSettings, ModelSettings
from seglab.models.registry import Evaluation, record_evaluation
from seglab.tracking.runs import RunHandle
from seglab.tracking.store import TrackingStore, artifact_access
from seglab.workflows.analysis import ModelEvaluation, evaluate_model

__all__ = [
    "ModelPublisher",
    "TrainingOutcome",
    "check_overrides",
    "parse_overrides",
    "resolve_bundle",
    "train_bundle",
]

REPO_BUNDLES = Path(__file__).resolve().parents[3] / "bundles"
#: Where ``seglab train`` writes checkpoints unless told otherwise (``<this>/<bundle>``).
DEFAULT_OUTPUT = Path("checkpoints")


class ModelPublisher:
    """Finish a training run: log the model, evaluate it, optionally register it.

    Parameters
    ----------
    bundle : str
        Bundle name (``"lung"``, ``"mito"``).
    kind : {"multiclass", "binary"}
    class_names : sequence of str
    in_channels : int
        Channels of one input image (before 2.5D stacking).
    network_name : str
    network_options : mapping
        Options of every network (as in the bundle's ``network_options``); the entry of
        ``network_name`` is kept.
    weights : path-like
        The checkpoint to publish (the best model by the validation key metric).
    configs_dir : path-like, optional
        The bundle's ``configs/``, stored with the model.
    eval_data : list of dict, optional
        The validation data list (dicts with ``"name"``); with ``dataset_dir`` the model is
        evaluated on those samples. Empty or None: no final evaluation.
    dataset_dir : path-like, optional
    eval_dataset_dir : path-like, optional
        A separate labelled dataset to evaluate on instead (all its samples), e.g. a held-out
        test set shared by every model that competes for ``@champion``.
    register_name : str, optional
        Register the model under this name.
    num_slices : int
        2.5D input slices.
    tiling_preset, tile_batch_size
        Inference tiling.
    intensity_range, intensity_remap, reference_peaks, foreground_classes
        See :class:`seglab.models.pyfunc.ModelSettings`.
    tta : {"off", "flips", "all"}
        Test-time augmentation of the final evaluation.
    """

    def __init__(
        self,
        bundle: str,
        kind: str,
        class_names: Sequence[str],
        in_channels: int,
        network_name: str,
        network_options: Mapping[str, Any],
        weights: str | os.PathLike[str],
        configs_dir: str | os.PathLike[str] | None = None,
        eval_data: Sequence[Mapping[str, Any]] | None = None,
        dataset_dir: str | os.PathLike[str] | None = None,
        eval_dataset_dir: str | os.PathLike[str] | None = None,
        register_name: str | None = None,
        num_slices: int = 1,
        tiling_preset: str = "uniform-81",
        tile_batch_size: int = 16,
        intensity_range: Sequence[float] = (0.0, 255.0),
        intensity_remap: bool = False,
        reference_peaks: Sequence[float] | None = None,
        foreground_classes: Sequence[int] = (),
        tta: str = "off",
    ) -> None:
        options = dict(network_options.get(network_name, {}) or {})
        self.settings = ModelSettings(
            bundle=bundle,
            kind=kind,  # type: ignore[arg-type]
            class_names=list(class_names),
            in_channels=int(in_channels),
            members=[MemberSettings(network_name, _plain(options), int(num_slices))],
            tiling_preset=tiling_preset,
            tile_batch_size=int(tile_batch_size),
            intensity_range=(float(intensity_range[0]), float(intensity_range[1])),
            intensity_remap=bool(intensity_remap),
            reference_peaks=(
                (float(reference_peaks[0]), float(reference_peaks[1]))
                if reference_peaks is not None
                else None
            ),
            foreground_classes=[int(c) for c in foreground_classes],
        )
        self.settings.validate()
        self.weights = Path(weights)
        self.configs_dir = configs_dir
        self.eval_names: list[str] | None = [
            str(d["name"]) for d in (eval_data or []) if "name" in d
        ]
        self.dataset_dir = dataset_dir
        if eval_dataset_dir:
            self.dataset_dir, self.eval_names = eval_dataset_dir, None
        self.register_name = register_name or None
        self.tta = tta
        self.logged: LoggedBundleModel | None = None
        self.evaluation: ModelEvaluation | None = None
        self.version: str | None = None

    def __call__(self, handle: RunHandle, engine: Any) -> None:
        """Log, evaluate and register (RunLogger calls this before closing the run)."""
        if not self.weights.is_file():
            raise SeglabError(
                f"no checkpoint at {self.weights} to publish",
                "check the CheckpointSaver's save_dir, or that validation ran at least once",
            )
        epoch = int(getattr(engine.state, "epoch", 0) or 0)
        self.logged = log_model(handle, self.settings, [self.weights], self.configs_dir, step=epoch)
        if self.dataset_dir is not None and self.eval_names != []:
            self.evaluation = self._evaluate(handle)
        if self.register_name:
            version = register_model(handle.store, self.register_name, self.logged)
            self.version = str(version.version)
            if self.evaluation is not None:
                record_evaluation(
                    handle.store,
                    self.register_name,
                    self.version,
                    _evaluation_record(self.evaluation, handle.run_id),
                )
            handle.client.set_tag(
                handle.run_id, "seglab.registered", f"{self.register_name}/{self.version}"
            )

    def _evaluate(self, handle: RunHandle) -> ModelEvaluation:
        from mlflow.entities import Metric

        model = load_logged_model(self.logged, handle.store)
        with tempfile.TemporaryDirectory(prefix="seglab-eval-") as tmp:
            out = Path(tmp) / "evaluation"
            out.mkdir()
            evaluation = evaluate_model(
                model,
                self.dataset_dir,  # type: ignore[arg-type]
                out,
                names=self.eval_names,
                tta=self.tta,
                title=f"{self.settings.bundle}: final evaluation on "
                + ("the validation split" if self.eval_names else Path(self.dataset_dir).name),
            )
            handle.client.log_artifacts(handle.run_id, str(out), "evaluation")
        now = int(time.time() * 1000)
        assert self.logged is not None
        metrics = [
            Metric(
                f"final_{key}",
                float(value),
                now,
                0,
                dataset_name=evaluation.dataset,
                dataset_digest=evaluation.digest[:36],
                model_id=self.logged.model_id,
                run_id=handle.run_id,
            )
            for key, value in evaluation.result.metrics.items()
            if _finite(value)
        ]
        handle.client.log_batch(handle.run_id, metrics=metrics)
        handle.client.set_tag(handle.run_id, "seglab.eval_digest", evaluation.digest)
        return evaluation


def _finite(value: Any) -> bool:
    try:
        return float(value) == float(value) and abs(float(value)) != float("inf")
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    """JSON-able copy of a config value (MONAI may hand over tuples)."""
    return json.loads(json.dumps(value, default=list))


def _evaluation_record(evaluation: ModelEvaluation, run_id: str) -> Evaluation:
    from datetime import UTC, datetime

    result = evaluation.result
    return Evaluation(
        metric=result.key_metric,
        value=float(result.key_value),
        dataset=evaluation.dataset,
        digest=evaluation.digest,
        time=datetime.now(UTC).isoformat(timespec="seconds"),
        run_id=run_id,
    )


def load_logged_model(logged: LoggedBundleModel | None, store: TrackingStore) -> Any:
    """Load a just-logged model back from the store (as ``evaluate`` does)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from seglab.models.pyfunc import load_downloaded_model

    if logged is None:
        raise SeglabError("no model was logged", "train first")
    folder = tempfile.mkdtemp(prefix="seglab-model-")
    quiet_artifact_progress()
    with artifact_access(store):
        get_artifact_repository(logged.artifact_location).download_artifacts("", folder)
    return load_downloaded_model(folder)


# -- seglab train -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingOutcome:
    """What a training produced."""

    run_id: str | None
    model_id: str | None
    registered: str | None
    metrics: dict[str, float]
    output_dir: Path


def _known_bundles() -> list[str]:
    """Names of seglab's own bundles (folders of ``bundles/`` with ``configs/train.json``)."""
    if not REPO_BUNDLES.is_dir():
        return []
    return sorted(
        p.name for p in REPO_BUNDLES.iterdir() if (p / "configs" / "train.json").is_file()
    )


def resolve_bundle(bundle: str | os.PathLike[str], trust: bool = False) -> Path:
    """Find a bundle folder: the name of one of seglab's bundles, or a path.

    A plain name (``lung``, ``mito``) is always one of seglab's own bundles, even when the
    current folder holds a folder of that name; any other bundle is given as a path (with a
    ``/``, e.g. ``./lung``), or as the name of a bundle folder (one with ``configs/train.json``)
    in the current folder. A bundle outside seglab's ``bundles/`` is refused unless ``trust``
    is set: bundle configs are code (``_target_`` and ``$`` expressions run at load).
    """
    text = str(bundle)
    known = _known_bundles()
    path = Path(bundle)
    is_bundle = (path / "configs" / "train.json").is_file()
    if "/" not in text and os.sep not in text and text in known:
        path = REPO_BUNDLES / text
    elif not is_bundle:
        choices = ", ".join(known) or "none found"
        if "/" in text or os.sep in text or path.exists():
            raise SeglabError(
                f"{text} is not a bundle folder (it has no configs/train.json)",
                f"give a bundle folder, or the name of one of seglab's bundles: {choices}",
            )
        raise SeglabError(
            f"unknown bundle {text!r}",
            f"use one of seglab's bundles ({choices}), or give a bundle folder as a path",
        )
    path = path.resolve()
    if not trust and REPO_BUNDLES.resolve() not in path.parents:
        raise SeglabError(
            f"bundle {path} is outside seglab's bundles/ and its configs would run as code",
            "review it, then pass --trust to run it",
        )
    return path


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` overrides; values are JSON when they parse, else strings.

    ``epochs=3`` gives 3, ``class_weights=[1,2]`` a list, ``network_name=segnet`` a string;
    nested ids use ``#`` (``network_options#unet#channels=[8,16]``). A value that starts like
    a JSON list, object or quoted text (``[``, ``{``, ``"``) must be valid JSON. Whether the ids
    exist and the values fit is checked against the bundle by :func:`check_overrides`.
    """
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SeglabError(f"override {item!r} is not key=value", "write e.g. --set epochs=5")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as err:
            if raw.strip().startswith(("[", "{", '"')):
                raise SeglabError(
                    f"override {item!r}: the value {raw!r} is not valid JSON ({err.msg} at "
                    f"character {err.pos + 1})",
                    f'write lists as {key}=[8,16], objects as {key}={{"a":1}}, and text '
                    "without brackets or quotes",
                ) from err
            value = raw
        parsed[key] = value
    return parsed


#: Obvious ranges of common numeric config ids, as (test, what the test says).
_OVERRIDE_RANGES: dict[str, tuple[Any, str]] = {
    **{
        key: (lambda v: v >= 1, "at least 1")
        for key in (
            "epochs",
            "batch_size",
            "num_samples",
            "val_interval",
            "tile_batch_size",
            "iterations_per_epoch",
            "num_slices",
            "patch_size",
        )
    },
    **{key: (lambda v: v >= 0, "at least 0") for key in ("num_workers", "seed", "momentum")},
    "learning_rate": (lambda v: v > 0, "greater than 0"),
    "val_fraction": (lambda v: 0 <= v < 1, "at least 0 and less than 1"),
    "cache_rate": (lambda v: 0 <= v <= 1, "between 0 and 1"),
}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _fits(default: Any, value: Any) -> bool:
    """Whether ``value`` has the JSON type of a config's literal ``default``."""
    if default is None or isinstance(default, str) and default.startswith(("@", "$", "%")):
        return True  # no default, or a reference or expression: any value may be meant
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list | tuple):
        return isinstance(value, list | tuple)
    if isinstance(default, Mapping):
        return isinstance(value, Mapping)
    return True


def check_overrides(
    config: Any, overrides: Mapping[str, Any], bundle: str = "", where: str = ""
) -> None:
    """Check config overrides against a bundle's configs before anything runs.

    Parameters
    ----------
    config : monai.bundle.ConfigParser
        The bundle's configs as read (``common.json``, ``train.json``, ...), before overrides.
    overrides : mapping
        Config id -> value (nested ids use ``#``).
    bundle : str
        The bundle's name, for messages.
    where : str
        Where the overrides come from (e.g. a recipe file), for messages.

    Raises
    ------
    SeglabError
        One line naming the id: unknown to the bundle (``unknown config id``), a value of
        another JSON type than the bundle's literal default (a number for a number, text for
        text, a list for a list; ids whose default is null or an ``@``/``$`` expression take any
        value), or a number out of the obvious range of a common id (``epochs`` >= 1,
        ``learning_rate`` > 0, ``val_fraction`` in [0, 1), ...).
    """
    source = f" ({where})" if where else ""
    name = f" {bundle}" if bundle else ""
    unknown = [key for key in overrides if key not in config]
    if unknown:
        raise SeglabError(
            f"unknown config id(s) {', '.join(unknown)} in bundle{name}{source}",
            "check the spelling; the ids are the keys of the bundle's configs/common.json and "
            "configs/train.json (nested ids use #, e.g. network_options#unet#channels)",
        )
    for key, value in overrides.items():
        default = config[key]
        shown = json.dumps(value, default=str)
        literal = json.dumps(default, default=str)
        example = f"{key}: {literal} in the recipe" if where else f"--set {key}={literal}"
        if not _fits(default, value):
            raise SeglabError(
                f"config id {key}{source} takes {_json_kind(default)} (bundle{name}'s default: "
                f"{json.dumps(default, default=str)}), got {_json_kind(value)} {shown}",
                f"give it as JSON like the default, e.g. {example}",
            )
        bounds = _OVERRIDE_RANGES.get(key)
        if bounds is None or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        test, allowed = bounds
        if not (math.isfinite(value) and test(value)):
            raise SeglabError(
                f"config id {key}{source} must be {allowed}, got {shown}",
                f"give e.g. {example}",
            )


def train_bundle(
    bundle: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    overrides: Mapping[str, Any] | None = None,
    register: str | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    store_dir: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    trust: bool = False,
    extra_configs: Sequence[str] = (),
    quiet: bool = False,
    overwrite: bool = False,
) -> TrainingOutcome:
    """Train a bundle with MONAI's ``ConfigWorkflow`` (as ``python -m monai.bundle run`` does).

    Parameters
    ----------
    bundle : path-like or str
        Bundle folder or name (``lung``, ``mito``).
    data : path-like
        Dataset folder.
    overrides : mapping, optional
        Config ids to set; an id missing from the configs is an error.
    register : str, optional
        Register the trained model under this name.
    eval_data : path-like, optional
        Labelled dataset for the final evaluation (default: the validation split of ``data``).
    store_dir : path-like, optional
        Embedded MLflow store folder (``MLFLOW_TRACKING_URI`` wins).
    output_dir : path-like, optional
        Checkpoints folder (default ``checkpoints/<bundle>`` in the current folder).
    trust : bool
        Allow a bundle from outside the repository.
    extra_configs : sequence of str
        More config file names of the bundle merged after ``common.json`` and ``train.json``.
    quiet : bool
        Show only warnings and errors of the engine's console log (the bundle's
        ``logging.conf`` prints every iteration), e.g. for the many trainings of a study.
    overwrite : bool
        Whether an output folder that exists and is not empty may be emptied for a new
        training; without it such a folder is refused, unless the overrides resume from it
        (``resume``).

    Returns
    -------
    TrainingOutcome

    Raises
    ------
    SeglabError
        Before anything is written or trained: an unknown bundle, override id or override
        value (:func:`check_overrides`), a dataset a training cannot use (headers, channel
        count, pixels, label colours, all-background labels; see
        :func:`seglab.io.dataset.check_samples`), unreadable initial weights, or an output
        folder that cannot be written or holds an earlier training (see ``overwrite``).
    """
    from monai.bundle import ConfigParser, ConfigWorkflow

    root = resolve_bundle(bundle, trust)
    scan_dataset(data)  # a clear error now, not deep inside MONAI
    configs = [str(root / "configs" / name) for name in ("common.json", "train.json")]
    configs += [str(root / "configs" / name) for name in extra_configs]
    settings: dict[str, Any] = {"bundle_root": str(root), "dataset_dir": str(Path(data))}
    if store_dir is not None:
        settings["mlflow_store"] = str(store_dir)
    settings["output_dir"] = str(
        output_dir if output_dir is not None else DEFAULT_OUTPUT / root.name
    )
    if register:
        settings["register_name"] = register
    if eval_data is not None:
        scan_dataset(eval_data)
        settings["eval_dataset_dir"] = str(Path(eval_data))
    if quiet or not progress_bars_enabled():
        settings["show_progress"] = False
        quieten_consoles()  # MONAI's module loggers print to stdout as the workflow is built
    user = dict(overrides or {})
    plain = ConfigParser()
    plain.read_config(configs)
    check_overrides(plain, user, root.name)
    _check_training_inputs(plain, settings | user, overwrite=overwrite)
    workflow = ConfigWorkflow(
        config_file=configs,
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        workflow_type="train",
        **(settings | user),
    )
    workflow.initialize()
    # initialize() applies the bundle's logging.conf to the root logger, dropping its handlers:
    # put the command log's file handler back; under --quiet silence the consoles
    reattach()
    if quiet or not progress_bars_enabled():
        workflow.trainer  # noqa: B018 - builds the trainer and its handlers' loggers now
        quieten_consoles()
    _fail_dead_runs(workflow.parser)
    try:
        workflow.run()
    except RuntimeError as err:
        # MONAI wraps what a run expression raises ("Failed to evaluate ..."): give the user
        # the seglab error inside, which says what was wrong and what to do
        cause = _seglab_cause(err)
        if cause is not None:
            raise cause from err
        raise
    finally:
        workflow.finalize()
    return _outcome(workflow, root)


def _fail_dead_runs(parser: Any) -> None:
    """Mark the runs of the bundle's experiment whose process died FAILED, before training.

    The bundle's :class:`~seglab.tracking.handlers.RunLogger` does it too when it opens its run,
    but a training that fails before that (bad data, an unreadable checkpoint) would otherwise
    leave a killed training's run RUNNING. Bundles without the ``tracking_enabled``,
    ``mlflow_store`` and ``experiment_name`` ids are left alone.
    """
    from seglab.flags import as_bool
    from seglab.tracking.store import fail_dead_runs, resolve_store

    ids = ("tracking_enabled", "mlflow_store", "experiment_name")
    if any(key not in parser for key in ids):
        return
    if not as_bool(parser.get_parsed_content("tracking_enabled"), "tracking_enabled"):
        return
    store = resolve_store(parser.get_parsed_content("mlflow_store"))
    name = str(parser.get_parsed_content("experiment_name"))
    experiment = store.client().get_experiment_by_name(name)
    if experiment is None:
        return
    failed = fail_dead_runs(store, [experiment.experiment_id])
    if failed:
        logging.getLogger(__name__).warning(
            "marked %d run(s) of experiment %s FAILED, their process died: %s",
            len(failed),
            name,
            ", ".join(failed),
        )


def _check_training_inputs(config: Any, values: Mapping[str, Any], *, overwrite: bool) -> None:
    """Refuse bad data, initial weights or output folder before anything is created.

    ``config`` is the bundle's ``ConfigParser`` as read (it receives ``values``); ``values``
    are the config ids train_bundle sets (settings and the user's overrides).
    """
    from seglab.bundle.checkpoint import load_weights
    from seglab.flags import as_bool
    from seglab.io.dataset import check_samples

    for key, value in values.items():
        config[key] = value
    channels = None
    if "publisher#in_channels" in config:  # channels of one image, before 2.5D stacking
        found = config.get_parsed_content("publisher#in_channels")
        channels = found if isinstance(found, int) and not isinstance(found, bool) else None
    check_samples(scan_dataset(values["dataset_dir"]), channels=channels, require_foreground=True)
    if values.get("eval_dataset_dir"):
        check_samples(scan_dataset(values["eval_dataset_dir"]), channels=channels)
    weights = config.get("initial_weights")
    if isinstance(weights, str) and weights and not weights.startswith(("$", "@", "%")):
        load_weights(
            weights,
            "initial weights",
            "pass a state_dict saved with torch.save, e.g. a checkpoint's model.pt",
        )
    resume = "resume" in config and as_bool(config.get_parsed_content("resume"), "resume")
    _check_output_folder(Path(str(values["output_dir"])), resume=resume, overwrite=overwrite)


def _check_output_folder(folder: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an output folder that cannot be written or holds another training's files.

    With ``overwrite`` (and no ``resume``) an existing folder's contents are removed here, the
    last check before the training starts.
    """
    if folder.exists() and not folder.is_dir():
        raise SeglabError(
            f"output {folder} exists and is not a folder", "choose another --output folder"
        )
    existing = folder if folder.is_dir() else next(p for p in folder.parents if p.exists())
    if not existing.is_dir():
        raise SeglabError(
            f"cannot create output folder {folder}: {existing} is not a folder",
            "choose another --output folder",
        )
    try:  # os.access says yes to root on read-only and virtual filesystems (/proc, /sys)
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise SeglabError(
            f"cannot write the output folder {folder}"
            + (f" (in {existing})" if existing != folder else "")
            + f": {err.strerror or err}",
            "choose a location you can write to (--output)",
        ) from err
    if folder.is_dir() and any(folder.iterdir()) and not resume:
        if not overwrite:
            raise OutputExistsError(
                f"output folder {folder} already exists and is not empty (an earlier training)",
                "pass --resume to continue that training, --overwrite to replace it, or "
                "choose another --output folder",
            )
        empty_folder(folder)


def _seglab_cause(error: BaseException) -> SeglabError | None:
    """Return the first :class:`SeglabError` in an exception's chain of causes, if any."""
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, SeglabError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _outcome(workflow: Any, root: Path) -> TrainingOutcome:
    from seglab.tracking.handlers import RunLogger

    handlers = workflow.parser.get_parsed_content("train#handlers")
    logger = next((h for h in handlers if isinstance(h, RunLogger)), None)
    publisher = None
    if logger is not None:
        publisher = next((f for f in logger.finishers if isinstance(f, ModelPublisher)), None)
    metrics: dict[str, float] = {}
    if publisher is not None and publisher.evaluation is not None:
        metrics = dict(publisher.evaluation.result.metrics)
    registered = None
    if publisher is not None and publisher.version is not None:
        registered = f"{publisher.register_name}/{publisher.version}"
    return TrainingOutcome(
        run_id=logger.last_run_id if logger is not None else None,
        model_id=publisher.logged.model_id if publisher and publisher.logged else None,
        registered=registered,
        metrics=metrics,
        output_dir=Path(workflow.parser.get_parsed_content("output_dir")),
    )
