"""A trained bundle as an MLflow pyfunc model: settings, weights, configs and the inference code.

MLflow's own PyTorch flavour now exports with ``torch.export``, which freezes the input shape and
cannot go into a sliding-window inference (ECOSYSTEM.md). A seglab model is instead a pyfunc
model whose artifact ``bundle/`` holds:

``bundle/settings.json``
    :class:`ModelSettings`: what the network is, how inputs are scaled and tiled, what the
    output classes mean. Loading reads only this file and the weights; the bundle's configs are
    kept for provenance and are never executed (a registered model runs no config code).
``bundle/models/member<i>.pt``
    One ``state_dict`` per ensemble member (one member for an ordinary model), loaded with
    ``torch.load(weights_only=True)``.
``bundle/configs/*.json``
    The bundle's configs as they were when the model was trained.

:meth:`BundleModel.predict` takes a batch of raw images ``(B, C, H, W)`` (intensities on the
training data's scale, e.g. 0..255) and returns class probabilities ``(B, K, H, W)``: each
member's softmax, stitched over the tiling preset and averaged over overlapping tiles, test-time
augmentation and ensemble members. For 2.5D models (``num_slices`` 3 or 5) the batch axis is the
stack's z axis: slice ``b`` is predicted from slices ``b - 2 .. b + 2`` of the batch.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from mlflow.pyfunc import PythonModel

from seglab.d4 import D4_SUBSETS as TTA_MODES
from seglab.errors import SeglabError

__all__ = [
    "SETTINGS_FILE",
    "BundleModel",
    "MemberSettings",
    "ModelSettings",
    "load_bundle_model",
    "load_downloaded_model",
]

SETTINGS_FILE = "settings.json"
ModelKind = Literal["multiclass", "binary"]


@dataclass(frozen=True)
class MemberSettings:
    """One network of a model (an ensemble has several).

    Attributes
    ----------
    network_name : str
        ``"unet"``, ``"segnet"`` or ``"deeplabv3plus"`` (see :mod:`seglab.networks.factory`).
    network_options : dict
        Keyword arguments of that network.
    num_slices : int
        Adjacent slices given as channels (1 for plain 2D; 3 or 5 for 2.5D stacks).
    weights : str
        Path of the ``state_dict`` inside the bundle folder, e.g. ``"models/member0.pt"``.
    """

    network_name: str
    network_options: dict[str, Any]
    num_slices: int = 1
    weights: str = "models/member0.pt"


@dataclass(frozen=True)
class ModelSettings:
    """Everything needed to run a trained bundle on new images.

    Attributes
    ----------
    bundle : str
        Bundle the model came from (``"lung"``, ``"mito"``).
    kind : {"multiclass", "binary"}
        ``"multiclass"``: the label is the argmax over classes (study A). ``"binary"``: the
        object probability is the sum of the ``foreground_classes`` probabilities, thresholded
        (study B).
    class_names : list of str
        One name per output channel.
    in_channels : int
        Channels of one input image (RGB: 3, SEM: 1).
    members : list of MemberSettings
        The networks; their probabilities are averaged.
    tiling_preset : str
        Tiling preset of :mod:`seglab.tiling` used at inference.
    tile_batch_size : int
        Tiles per forward pass.
    intensity_range : tuple of float
        Raw intensities ``(a, b)`` mapped linearly to 0..1 before the network.
    intensity_remap : bool
        Remap each image's two histogram peaks onto ``reference_peaks`` first (study B,
        eq. 2.4; SEM data only).
    reference_peaks : tuple of float or None
        ``(P1, P2)`` on the raw scale, with ``intensity_remap``.
    foreground_classes : list of int
        With ``kind="binary"``, the classes whose probabilities make the object map.
    """

    bundle: str
    kind: ModelKind
    class_names: list[str]
    in_channels: int
    members: list[MemberSettings]
    tiling_preset: str = "uniform-81"
    tile_batch_size: int = 16
    intensity_range: tuple[float, float] = (0.0, 255.0)
    intensity_remap: bool = False
    reference_peaks: tuple[float, float] | None = None
    foreground_classes: list[int] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Output channels."""
        return len(self.class_names)

    def to_json(self) -> str:
        """Serialise (the inverse of :meth:`from_dict`)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSettings:
        """Build settings from their JSON form, with a clear error for a malformed file."""
        try:
            members = [MemberSettings(**member) for member in data["members"]]
            fields = {k: v for k, v in data.items() if k != "members"}
            settings = cls(members=members, **fields)
        except (KeyError, TypeError) as err:
            raise SeglabError(
                f"model settings are malformed ({err})",
                "the model was not logged by seglab, or by an incompatible version; log it again",
            ) from err
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check the settings once (one-line :class:`SeglabError` otherwise)."""
        if self.kind not in ("multiclass", "binary"):
            raise SeglabError(f"unknown model kind {self.kind!r}", "use multiclass or binary")
        if len(self.class_names) < 2:
            raise SeglabError("a model needs at least 2 classes", "list every output class")
        if not self.members:
            raise SeglabError("a model needs at least one network", "add a member")
        for member in self.members:
            if member.num_slices not in (1, 3, 5):
                raise SeglabError(
                    f"num_slices must be 1, 3 or 5, got {member.num_slices!r}",
                    "use 1 (2D), 3 or 5 (2.5D)",
                )
        if self.kind == "binary" and not self.foreground_classes:
            raise SeglabError(
                "a binary model needs foreground_classes", "name the object classes, e.g. [1, 2]"
            )
        low, high = self.intensity_range
        if not high > low:
            raise SeglabError(
                f"intensity_range must be increasing, got {self.intensity_range}", "e.g. [0, 255]"
            )
        if self.intensity_remap and self.reference_peaks is None:
            raise SeglabError(
                "intensity_remap needs reference_peaks", "give (P1, P2), e.g. [162.99, 187.51]"
            )


def read_settings(bundle_dir: str | os.PathLike[str]) -> ModelSettings:
    """Read ``settings.json`` of a model's bundle folder."""
    path = Path(bundle_dir) / SETTINGS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise SeglabError(
            f"{path} is missing", "the model was not logged by seglab; log it with seglab train"
        ) from err
    except json.JSONDecodeError as err:
        raise SeglabError(f"{path} is not valid JSON ({err.msg})", "log the model again") from err
    return ModelSettings.from_dict(data)


def _load_member(bundle_dir: Path, settings: ModelSettings, member: MemberSettings) -> Any:
    import torch

    from seglab.networks.factory import build_network

    network = build_network(
        member.network_name,
        settings.in_channels * member.num_slices,
        settings.num_classes,
        {member.network_name: dict(member.network_options)},
    )
    path = bundle_dir / member.weights
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        network.load_state_dict(state)
    except FileNotFoundError as err:
        raise SeglabError(f"model weights {path} are missing", "log the model again") from err
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SeglabError(
            f"cannot load model weights {path}: {first}",
            "the file is corrupt or belongs to another network; log the model again",
        ) from err
    return network.eval()


class BundleRunner:
    """Run a trained seglab bundle on images (the code of :class:`BundleModel`)."""

    def __init__(self) -> None:
        self.settings: ModelSettings | None = None
        self.networks: list[Any] = []
        self.device = "cpu"

    # -- MLflow's PythonModel interface -------------------------------------------------------
    def load_context(self, context: Any) -> None:
        """Load settings and weights from the model's ``bundle`` artifact."""
        self.load(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 - MLflow reads hints
        """Class probabilities for a batch of raw images.

        Parameters
        ----------
        context : mlflow.pyfunc.PythonModelContext
            Unused (the model is loaded by :meth:`load_context`).
        model_input : (B, C, H, W) ndarray
            Raw images, intensities on the training scale (e.g. 0..255). For 2.5D models the
            batch is one stack in z order.
        params : dict, optional
            ``{"tta": "off" | "flips" | "all", "precision": "float32" | "bfloat16"}``.

        Returns
        -------
        (B, K, H, W) ndarray of float32
            Class probabilities (sum to 1 over K).
        """
        tta = (params or {}).get("tta", "off")
        precision = (params or {}).get("precision", "float32")
        images = np.asarray(model_input)
        if images.ndim != 4:
            raise SeglabError(
                f"model input must be (B, C, H, W), got shape {images.shape}",
                "batch channel-first images",
            )
        settings = self._settings()
        if images.shape[1] != settings.in_channels:
            raise SeglabError(
                f"the model takes {settings.in_channels} channel(s), the input has "
                f"{images.shape[1]}",
                "give images with the channels the model was trained on",
            )
        if settings.in_channels == 1:
            return self.probabilities(images[:, 0], stack=True, tta=tta, precision=precision)
        return np.stack(
            [self.probabilities(image, tta=tta, precision=precision) for image in images]
        )

    # -- seglab's own interface ---------------------------------------------------------------
    def load(self, bundle_dir: str | os.PathLike[str], device: str = "cpu") -> BundleModel:
        """Load settings and every member's weights from a bundle folder."""
        folder = Path(bundle_dir)
        self.settings = read_settings(folder)
        self.networks = [_load_member(folder, self.settings, m) for m in self.settings.members]
        self.device = device
        for network in self.networks:
            network.to(device)
        return self

    def _settings(self) -> ModelSettings:
        if self.settings is None:
            raise SeglabError("the model is not loaded", "call load() or load it through MLflow")
        return self.settings

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """Raw intensities -> the network's float32 input (remap, then scale to 0..1).

        Parameters
        ----------
        raw : (..., H, W) ndarray
            One image ``(C, H, W)``/``(H, W)`` or one stack ``(Z, H, W)``.
        """
        settings = self._settings()
        data = np.asarray(raw)
        if not np.all(np.isfinite(data)):
            raise SeglabError(
                "the image has NaN or infinite pixels", "fix or mask those pixels first"
            )
        if settings.intensity_remap:
            from seglab.intensity import remap_to_reference

            low, high = settings.intensity_range
            data, _ = remap_to_reference(
                data.astype(np.float32, copy=False),
                tuple(settings.reference_peaks or ()),
                value_range=(low, high),
                dtype=np.float32,
            )
        low, high = settings.intensity_range
        return ((np.asarray(data, dtype=np.float32) - low) / (high - low)).astype(np.float32)

    def probabilities(
        self,
        raw: np.ndarray,
        *,
        stack: bool = False,
        tta: str = "off",
        precision: str = "float32",
        progress: Any = None,
    ) -> np.ndarray:
        """Class probabilities of one image or one stack.

        Parameters
        ----------
        raw : ndarray
            ``(C, H, W)`` image, or with ``stack=True`` a ``(Z, H, W)`` single-channel stack.
        stack : bool
            Treat ``raw`` as a z-stack (slice by slice, or 2.5D for members with
            ``num_slices > 1``).
        tta : {"off", "flips", "all"}
            Test-time augmentation over the D4 group.
        precision : {"float32", "bfloat16"}
            ``"bfloat16"`` runs the network under autocast (opt-in: faster on CPUs with bf16
            instructions; about 0.02-0.1 % of pixels change class on a trained model, see
            ``benchmarks/RESULTS.md``).
        progress : callable, optional
            ``progress(done, total)`` for stacks.

        Returns
        -------
        ndarray of float32
            ``(K, H, W)``, or ``(Z, K, H, W)`` for a stack.
        """
        import torch

        from seglab.bundle import TilingInferer, predict_image, predict_stack

        settings = self._settings()
        if tta not in TTA_MODES:
            raise SeglabError(f"unknown tta {tta!r}", f"use one of {', '.join(TTA_MODES)}")
        data = self.preprocess(raw)
        inferer = TilingInferer(
            settings.tiling_preset,
            batch_size=settings.tile_batch_size,
            activation="softmax",
            average=True,
            tta=tta,
            precision=precision,
        )
        total: np.ndarray | None = None
        with torch.inference_mode():
            for member, network in zip(settings.members, self.networks, strict=True):
                if stack:
                    if data.ndim != 3:
                        raise SeglabError(
                            f"a stack must be (Z, H, W), got shape {data.shape}",
                            "give a single-channel z-stack",
                        )
                    out = predict_stack(
                        network,
                        data,
                        inferer,
                        num_slices=member.num_slices,
                        device=self.device,
                        progress=progress,
                    )
                    out = np.moveaxis(out, 0, 1)  # (K, Z, H, W) -> (Z, K, H, W)
                else:
                    image = data[None] if data.ndim == 2 else data
                    out = predict_image(network, image, inferer, device=self.device)
                total = out if total is None else total + out
        assert total is not None
        return (total / len(self.networks)).astype(np.float32, copy=False)

    def object_probability(self, probabilities: np.ndarray, class_axis: int = 0) -> np.ndarray:
        """Sum of the foreground classes' probabilities (binary models), float32 0..1."""
        settings = self._settings()
        index = np.asarray(settings.foreground_classes or [1])
        summed = np.take(probabilities, index, axis=class_axis).sum(axis=class_axis)
        # a sum of float32 probabilities can pass 1 by a rounding step
        return np.clip(summed, 0.0, 1.0, out=summed)

    def labels(self, probabilities: np.ndarray, class_axis: int = 0) -> np.ndarray:
        """Class-index map: argmax over classes (multiclass) or object >= 0.5 (binary)."""
        if self._settings().kind == "binary":
            return (self.object_probability(probabilities, class_axis) >= 0.5).astype(np.uint8)
        return np.argmax(probabilities, axis=class_axis).astype(np.uint8)


# MLflow warns at class creation that predict() has no type hints it can validate; the tensor
# signature logged with every model is what describes and checks the inputs here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*Add type hints", category=UserWarning)

    class BundleModel(BundleRunner, PythonModel):
        """Run a trained seglab bundle on images; the object MLflow stores as a pyfunc model.

        Use :func:`load_bundle_model` for a bundle folder and :func:`load_downloaded_model` for
        a downloaded logged or registered model (seglab's own path: it runs none of the model's
        stored code). ``mlflow.pyfunc.load_model(uri).unwrap_python_model()`` works too, for
        models from a store you trust: it runs the stored ``model_code.py``, then calls
        :meth:`load_context`; MLflow calls :meth:`predict`.
        """


def load_bundle_model(bundle_dir: str | os.PathLike[str], device: str = "cpu") -> BundleModel:
    """Load a model from a saved bundle folder (the ``bundle`` artifact of a logged model)."""
    return BundleModel().load(bundle_dir, device=device)


def load_downloaded_model(model_dir: str | os.PathLike[str], device: str = "cpu") -> BundleModel:
    """Load a seglab model downloaded from MLflow (its ``MLmodel`` folder) without running code.

    ``mlflow.pyfunc.load_model`` runs the ``model_code.py`` stored with a "models from code"
    model: anyone who can write to the artifact store could run code on every machine that
    loads the model. Here the ``MLmodel`` file is read as data (``yaml.safe_load``), its
    ``bundle`` artifact located, and that bundle loaded by the installed seglab: settings from
    JSON, weights with ``torch.load(weights_only=True)``. The stored code is never executed.

    Parameters
    ----------
    model_dir : path-like
        The downloaded model folder (``MLmodel``, ``artifacts/bundle``, ...).
    device : str
        Torch device of the networks.

    Returns
    -------
    BundleModel
    """
    import yaml

    folder = Path(model_dir)
    meta_file = folder / "MLmodel"
    try:
        meta = yaml.safe_load(meta_file.read_text())
    except FileNotFoundError as err:
        raise SeglabError(
            f"{folder} has no MLmodel file", "the folder is not an MLflow model; download it again"
        ) from err
    except yaml.YAMLError as err:
        raise SeglabError(
            f"{meta_file} is not valid YAML", "the model's files are damaged; log it again"
        ) from err
    flavors = meta.get("flavors") if isinstance(meta, dict) else None
    pyfunc = flavors.get("python_function") if isinstance(flavors, dict) else None
    artifacts = pyfunc.get("artifacts") if isinstance(pyfunc, dict) else None
    bundle = artifacts.get("bundle") if isinstance(artifacts, dict) else None
    relative = bundle.get("path") if isinstance(bundle, dict) else None
    if not isinstance(relative, str):
        raise SeglabError(
            f"the model in {folder} is not a seglab model (its MLmodel names no bundle artifact)",
            "register models with seglab train; load others with mlflow.pyfunc if you trust them",
        )
    bundle_dir = (folder / relative).resolve()
    if folder.resolve() not in bundle_dir.parents:
        raise SeglabError(
            f"the MLmodel file in {folder} points its bundle outside the model ({relative})",
            "the model's files were altered; restore them or log the model again",
        )
    return BundleModel().load(bundle_dir, device=device)
