"""Routine analysis with a trained model: evaluate it on a labelled dataset, segment new images.

Both work on a :class:`seglab.models.pyfunc.BundleModel` (loaded from ``models:/NAME@ALIAS`` by
the command, or from a just-logged model at the end of a training), so the numbers recorded for
a model version at training time and those of a later ``seglab evaluate`` come from the same
code path.

- Multi-class models (study A): per image, class probabilities -> argmax -> the study-A Dice
  table (:func:`seglab.workflows.evaluation.evaluate_multiclass`).
- Binary models (study B): per stack, object probability (0..255) -> the threshold sweep and
  precision/recall/F (:func:`seglab.workflows.evaluation.evaluate_binary`); ground truth is
  ``label > 0`` (instance labels or a binary mask).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seglab.errors import SeglabError
from seglab.io.atomic import atomic_directory
from seglab.io.dataset import Dataset, Sample, check_samples, file_sha256, scan_dataset
from seglab.io.images import read_image, write_image
from seglab.metrics import probability_to_uint8
from seglab.workflows._outputs import progress
from seglab.workflows.evaluation import EvaluationResult, evaluate_binary, evaluate_multiclass

if TYPE_CHECKING:
    from seglab.models.pyfunc import BundleModel

__all__ = [
    "ModelEvaluation",
    "dataset_digest",
    "evaluate_model",
    "model_input",
    "segment",
]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".nii", ".nii.gz")


@dataclass(frozen=True)
class ModelEvaluation:
    """An evaluation of a model on a dataset.

    Attributes
    ----------
    result : EvaluationResult
        Tables, figures, metrics.
    dataset : str
        Dataset folder name.
    digest : str
        :func:`dataset_digest` of the evaluated samples (the promotion gate compares versions
        on equal digests).
    samples : list of str
        Evaluated sample names.
    """

    result: EvaluationResult
    dataset: str
    digest: str
    samples: list[str]


def dataset_digest(dataset: Dataset, names: Sequence[str] | None = None) -> str:
    """SHA-256 over the names and file contents of a dataset's samples (all, or ``names``).

    Two evaluations share a digest exactly when they used the same images and labels, whatever
    the folder is called or where it lives.
    """
    chosen = [s for s in dataset.samples if names is None or s.name in set(names)]
    lines = []
    for sample in chosen:
        parts = [sample.name, file_sha256(sample.image)]
        if sample.label is not None:
            parts.append(file_sha256(sample.label))
        lines.append(":".join(parts))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def model_input(model: BundleModel, image: np.ndarray, axes: str) -> tuple[np.ndarray, bool]:
    """Arrange a read image for the model: ``(C, H, W)`` for 2D, ``(Z, H, W)`` for stacks.

    Returns
    -------
    (array, is_stack)
    """
    settings = model.settings
    assert settings is not None
    channels = settings.in_channels
    if axes == "YXC":
        array = np.moveaxis(image, -1, 0)
    elif axes == "YX":
        array = image[None]
    elif axes == "ZYX":
        if channels != 1:
            raise SeglabError(
                f"the model takes {channels}-channel 2D images, the input is a z-stack",
                "give 2D images with that many channels",
            )
        return image, True
    else:
        raise SeglabError(
            f"images with axes {axes} are not supported by this model",
            "give 2D images (YX or YXC) or single-channel z-stacks (ZYX)",
        )
    if array.shape[0] != channels:
        raise SeglabError(
            f"the model takes {channels} channel(s), the image has {array.shape[0]}",
            "give images with the channels the model was trained on",
        )
    if settings.kind == "binary" and channels == 1:
        return array, True  # a single 2D slice is a stack of one
    return array, False


def _predict(
    model: BundleModel,
    image: np.ndarray,
    axes: str,
    tta: str,
    precision: str = "float32",
    source: Path | None = None,
) -> np.ndarray:
    """Probabilities ``(K, H, W)`` or ``(K, Z, H, W)``; errors name ``source``, the image file."""
    try:
        array, is_stack = model_input(model, image, axes)
    except SeglabError as err:
        if source is None:
            raise
        raise SeglabError(f"{source}: {err.problem}", err.fix) from err
    probabilities = model.probabilities(array, stack=is_stack, tta=tta, precision=precision)
    return np.moveaxis(probabilities, 1, 0) if is_stack else probabilities


def _samples(
    model: BundleModel, dataset: Dataset, chosen: list[Sample], tta: str, precision: str
) -> Iterator[tuple[str, Any, np.ndarray, np.ndarray]]:
    settings = model.settings
    assert settings is not None
    for sample in progress(chosen, "evaluating"):
        loaded = dataset.load(sample)
        if loaded.label is None:
            raise SeglabError(
                f"sample {sample.name} of {dataset.root} has no label",
                "evaluation needs a labels/ file for every image",
            )
        probabilities = _predict(model, loaded.image, loaded.axes, tta, precision, sample.image)
        if settings.kind == "binary":
            object_map = model.object_probability(probabilities)
            if object_map.ndim == 3 and loaded.label.ndim == 2:
                object_map = object_map[0]
            yield sample.name, loaded.image, probability_to_uint8(object_map), loaded.label > 0
        else:
            yield sample.name, loaded.image, model.labels(probabilities), loaded.label


def evaluate_model(
    model: BundleModel,
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    tta: str = "off",
    precision: str = "float32",
    title: str = "",
) -> ModelEvaluation:
    """Evaluate ``model`` on the labelled dataset folder ``data``; write the report to ``out_dir``.

    Parameters
    ----------
    model : BundleModel
    data : path-like
        Dataset folder (``images/``, ``labels/``, ``classes.json`` for colour labels).
    out_dir : path-like
        Existing folder for report.md, CSV and PNG files.
    names : sequence of str, optional
        Evaluate only these samples (e.g. a training's validation split).
    tta : {"off", "flips", "all"}
    precision : {"float32", "bfloat16"}
        Network precision; ``"bfloat16"`` is opt-in (faster, changes a few pixels' class).
    title : str
        Report title.

    Returns
    -------
    ModelEvaluation
    """
    settings = model.settings
    if settings is None:
        raise SeglabError("the model is not loaded", "load it first")
    dataset = scan_dataset(data)
    chosen = [s for s in dataset.samples if names is None or s.name in set(names)]
    if not chosen:
        raise SeglabError(f"no samples to evaluate in {dataset.root}", "check --data")
    # every file's problem (channels, pixels, label colours) now, before minutes of inference
    check_samples(replace(dataset, samples=tuple(chosen)), channels=settings.in_channels)
    samples = _samples(model, dataset, chosen, tta, precision)
    if settings.kind == "binary":
        result = evaluate_binary(samples, out_dir, title=title)
    else:
        colours = dataset.colour_table.colours if dataset.colour_table is not None else None
        if colours is not None and len(colours) != settings.num_classes:
            colours = None
        result = evaluate_multiclass(
            samples, settings.class_names, out_dir, title=title, colours=colours
        )
    digest = dataset_digest(dataset, [s.name for s in chosen])
    return ModelEvaluation(result, dataset.root.name, digest, [s.name for s in chosen])


def _inputs(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        folder = source / "images" if (source / "images").is_dir() else source
        found = sorted(
            p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
        )
        if found:
            return found
        raise SeglabError(
            f"{source} holds no images ({', '.join(IMAGE_SUFFIXES)})",
            "give an image file, a folder of images, or a dataset folder",
        )
    raise SeglabError(f"{source} does not exist", "give an existing image file or folder")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def segment(
    model: BundleModel,
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    tta: str = "off",
    precision: str = "float32",
    probabilities: str = "uint8",
    overwrite: bool = False,
) -> list[Path]:
    """Segment an image, a stack, or a folder of them; write label and probability maps.

    Parameters
    ----------
    model : BundleModel
    source : path-like
        Image file, folder of images, or dataset folder (its ``images/``).
    out_dir : path-like
        New folder (replaced only with ``overwrite``), written atomically: ``labels/<name>``
        (PNG for 2D, TIFF for stacks; class indices, or 0/1 objects for binary models) and
        ``probabilities/<name>.tif`` (multi-page; one page per class, or the object map per
        slice for binary models).
    tta : {"off", "flips", "all"}
    precision : {"float32", "bfloat16"}
        Network precision; ``"bfloat16"`` is opt-in (faster, changes a few pixels' class).
    probabilities : {"uint8", "float32", "none"}
        uint8 0..255 (as CDeep3M), float32 0..1, or no probability maps.
    overwrite : bool

    Returns
    -------
    list of Path
        Files written (final locations).
    """
    if probabilities not in ("uint8", "float32", "none"):
        raise SeglabError(
            f"unknown probability format {probabilities!r}", "use uint8, float32 or none"
        )
    inputs = _inputs(Path(source))
    written: list[Path] = []
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        for path in progress(inputs, "segmenting"):
            image = read_image(path)
            probs = _predict(model, image.array, image.axes, tta, precision, path)
            name = _stem(path)
            labels = model.labels(probs)
            stack = labels.ndim == 3
            label_path = Path("labels") / f"{name}.{'tif' if stack else 'png'}"
            (tmp / "labels").mkdir(exist_ok=True)
            write_image(tmp / label_path, labels, image.spacing if stack else None)
            written.append(label_path)
            if probabilities != "none":
                if model.settings is not None and model.settings.kind == "binary":
                    maps = model.object_probability(probs)
                else:
                    maps = probs
                maps = (
                    probability_to_uint8(maps)
                    if probabilities == "uint8"
                    else maps.astype(np.float32)
                )
                prob_path = Path("probabilities") / f"{name}.tif"
                (tmp / "probabilities").mkdir(exist_ok=True)
                spacing = image.spacing if stack and image.spacing else None
                write_image(tmp / prob_path, maps, spacing, axes="ZYX" if maps.ndim == 3 else None)
                written.append(prob_path)
    return [Path(out_dir) / p for p in written]
