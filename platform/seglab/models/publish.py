"""Save a trained bundle as a pyfunc model, log it on its training run, register it by name.

Everything goes through an explicit client of a :class:`~seglab.tracking.store.TrackingStore`
(the fluent ``mlflow.*`` API would need a process-global URI and an active run):

1. :func:`save_model_folder` writes the pyfunc model locally: ``MLmodel``, the code file
   :mod:`seglab.models.model_code`, and the ``bundle`` artifact (settings, weights, configs);
2. :func:`log_model` creates a LoggedModel linked to the run (an output of the run, with the
   run's parameters), uploads the folder, and marks it READY;
3. :func:`register_model` makes it a new version of a registered model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seglab.errors import SeglabError
from seglab.models.pyfunc import SETTINGS_FILE, ModelSettings
from seglab.tracking.runs import RunHandle
from seglab.tracking.store import TrackingStore, artifact_access

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

__all__ = ["LoggedBundleModel", "log_model", "register_model", "save_model_folder"]

#: Name of the logged model inside its run (``runs:/<id>/model`` in MLflow's terms).
MODEL_NAME = "model"


@dataclass(frozen=True)
class LoggedBundleModel:
    """A model logged on a run.

    Attributes
    ----------
    model_id : str
        MLflow LoggedModel id (``m-...``).
    artifact_location : str
        Where its files are (the registry's ``source``).
    run_id : str
        The training run.
    """

    model_id: str
    artifact_location: str
    run_id: str

    @property
    def uri(self) -> str:
        """``models:/<model_id>``."""
        return f"models:/{self.model_id}"


def quiet_artifact_progress() -> None:
    """Turn off MLflow's per-file progress bars (models are a handful of small files).

    Respects a value the user set in the environment.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _signature(settings: ModelSettings) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype("float32"), (-1, settings.in_channels, -1, -1))])
    outputs = Schema([TensorSpec(np.dtype("float32"), (-1, settings.num_classes, -1, -1))])
    params = ParamSchema([ParamSpec("tta", "string", "off")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def save_model_folder(
    path: str | os.PathLike[str],
    settings: ModelSettings,
    weights: list[str | os.PathLike[str]],
    configs_dir: str | os.PathLike[str] | None = None,
    mlflow_model: Any = None,
) -> Path:
    """Write a seglab pyfunc model to the folder ``path`` (which must not exist).

    Parameters
    ----------
    path : path-like
        New folder.
    settings : ModelSettings
        Its ``members[i].weights`` are rewritten to ``models/member<i>.pt``.
    weights : list of path-like
        One ``state_dict`` file per member (a checkpoint dict with a ``"model"`` entry works).
    configs_dir : path-like, optional
        The bundle's ``configs/`` folder, copied for provenance.
    mlflow_model : mlflow.models.Model, optional
        Pre-filled ``Model`` (run and model ids) for the ``MLmodel`` file.

    Returns
    -------
    Path
        ``path``.
    """
    from mlflow.pyfunc import save_model as save_pyfunc

    from seglab.models import model_code

    settings.validate()
    quiet_artifact_progress()
    if len(weights) != len(settings.members):
        raise SeglabError(
            f"{len(settings.members)} network(s) but {len(weights)} weight file(s)",
            "give one weight file per ensemble member",
        )
    with tempfile.TemporaryDirectory(prefix="seglab-model-") as tmp:
        bundle = Path(tmp) / "bundle"
        (bundle / "models").mkdir(parents=True)
        members = []
        for i, (member, source) in enumerate(zip(settings.members, weights, strict=True)):
            source = Path(source)
            if not source.is_file():
                raise SeglabError(
                    f"weights {source} do not exist", "train the model first, or fix the path"
                )
            target = f"models/member{i}.pt"
            shutil.copyfile(source, bundle / target)
            members.append(type(member)(**{**member.__dict__, "weights": target}))
        final = ModelSettings(**{**settings.__dict__, "members": members})
        (bundle / SETTINGS_FILE).write_text(final.to_json())
        if configs_dir is not None and Path(configs_dir).is_dir():
            shutil.copytree(configs_dir, bundle / "configs")
        with warnings.catch_warnings():
            # the signature fixes the tensor layout; an input example would be a full image
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            save_pyfunc(
                path,
                python_model=model_code.__file__,
                artifacts={"bundle": str(bundle)},
                signature=_signature(final),
                mlflow_model=mlflow_model,
                pip_requirements=_requirements(),
            )
    return Path(path)


def _requirements() -> list[str]:
    from importlib import metadata

    pins = []
    for name in ("seglab", "torch", "monai", "mlflow", "numpy", "scikit-image", "tifffile"):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def log_model(
    handle: RunHandle,
    settings: ModelSettings,
    weights: list[str | os.PathLike[str]],
    configs_dir: str | os.PathLike[str] | None = None,
    *,
    step: int = 0,
) -> LoggedBundleModel:
    """Log a trained bundle on its (open) run as an MLflow LoggedModel.

    Parameters
    ----------
    handle : RunHandle
        The training run.
    settings, weights, configs_dir
        See :func:`save_model_folder`.
    step : int
        Training step (epoch) the model belongs to.

    Returns
    -------
    LoggedBundleModel
    """
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = handle.client
    params = client.get_run(handle.run_id).data.params
    logged = client.create_logged_model(
        handle.experiment_id,
        name=MODEL_NAME,
        source_run_id=handle.run_id,
        params=dict(params),
        tags={"seglab.bundle": settings.bundle, "seglab.kind": settings.kind},
        model_type="seglab-bundle",
    )
    try:
        with tempfile.TemporaryDirectory(prefix="seglab-log-") as tmp:
            folder = Path(tmp) / "model"
            mlflow_model = Model(
                run_id=handle.run_id,
                model_id=logged.model_id,
                artifact_path=logged.artifact_location,
            )
            save_model_folder(folder, settings, weights, configs_dir, mlflow_model=mlflow_model)
            with artifact_access(handle.store):
                get_artifact_repository(logged.artifact_location).log_artifacts(str(folder))
        client.finalize_logged_model(logged.model_id, "READY")
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.log_outputs(handle.run_id, [LoggedModelOutput(logged.model_id, step=step)])
    client.set_tag(handle.run_id, "seglab.model_id", logged.model_id)
    return LoggedBundleModel(logged.model_id, logged.artifact_location, handle.run_id)


def register_model(
    store: TrackingStore,
    name: str,
    model: LoggedBundleModel,
    description: str | None = None,
) -> ModelVersion:
    """Register ``model`` as a new version of the registered model ``name`` (created if new).

    Returns
    -------
    mlflow.entities.model_registry.ModelVersion
    """
    from mlflow.exceptions import MlflowException

    check_model_name(name)
    client = store.client()
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code) and "already exists" not in str(
            err
        ):
            raise
    return client.create_model_version(
        name,
        source=model.artifact_location,
        run_id=model.run_id,
        model_id=model.model_id,
        description=description,
    )


#: Registered models whose names start so are seglab's registry locks (:mod:`.registry`).
LOCK_PREFIX = "seglab.lock."


def check_model_name(name: str) -> str:
    """Check a registered model name (letters, digits, ``-``, ``_``, ``.``; not a lock's)."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise SeglabError(
            f"model name {name!r} is not valid",
            "use letters, digits, '-', '_' or '.', e.g. lung-unet",
        )
    if name.startswith(LOCK_PREFIX):
        raise SeglabError(
            f"model name {name!r} starts with {LOCK_PREFIX!r}, which seglab keeps for its "
            "registry locks",
            "choose another name, e.g. lung-unet",
        )
    return name
