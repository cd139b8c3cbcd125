"""MONAI-style data lists (``[{"image": path, "label": path}, ...]``) from a dataset folder."""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np

from seglab.errors import SeglabError
from seglab.io.dataset import scan_dataset

__all__ = ["SPLITS", "class_weights_for", "dataset_dicts"]

Split = Literal["train", "val", "all"]
SPLITS: tuple[str, ...] = ("train", "val", "all")


def dataset_dicts(
    root: str | os.PathLike[str],
    split: Split = "all",
    val_fraction: float = 0.0,
    seed: int = 0,
    require_labels: bool = True,
) -> list[dict[str, str]]:
    """List a dataset folder's samples as dictionaries of file paths, split reproducibly.

    Parameters
    ----------
    root : path-like
        Dataset folder (``images/``, ``labels/``, optional ``contours/`` and ``classes.json``);
        see :mod:`seglab.io.dataset`.
    split : {"train", "val", "all"}
        Which part to return. ``"val"`` is ``round(val_fraction * n)`` samples (at least one
        when ``val_fraction > 0`` and ``n >= 2``) drawn with ``seed``; ``"train"`` is the rest.
    val_fraction : float
        Fraction of samples held out for validation, in [0, 1).
    seed : int
        Seed of the permutation that picks the validation samples.
    require_labels : bool
        With False, images without labels are listed too (their dictionaries have no
        ``"label"``), e.g. for inference.

    Returns
    -------
    list of dict
        ``{"image": str, "label": str, "name": str}`` per sample (``"label"`` left out when the
        sample has none), plus ``"contour": str`` for samples with a file in ``contours/``;
        sorted by name. Empty when the split holds no sample.

    Raises
    ------
    SeglabError
        For an unknown split or a fraction outside [0, 1).
    DataFileError
        For a dataset folder that :func:`seglab.io.dataset.scan_dataset` rejects.
    """
    if split not in SPLITS:
        raise SeglabError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
    if isinstance(val_fraction, bool) or not 0.0 <= float(val_fraction) < 1.0:
        raise SeglabError(
            f"val_fraction must be in [0, 1), got {val_fraction!r}", "pass e.g. val_fraction=0.2"
        )
    samples = scan_dataset(root, require_labels=require_labels).samples
    n = len(samples)
    n_val = round(float(val_fraction) * n)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    held_out = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    if split == "all":
        chosen = range(n)
    else:
        chosen = [i for i in range(n) if (i in held_out) == (split == "val")]
    dicts = []
    for i in chosen:
        sample = samples[i]
        entry = {"image": str(sample.image), "name": sample.name}
        if sample.label is not None:
            entry["label"] = str(sample.label)
        if sample.contour is not None:
            entry["contour"] = str(sample.contour)
        dicts.append(entry)
    return dicts


def class_weights_for(
    datalist: list[dict[str, str]],
    num_classes: int,
    balancing: str,
    transforms: Any,
    key: str = "label",
) -> list[float]:
    """Class weights from the training labels' class frequencies, for a class-weighted loss.

    Study A blames its failed rare class on an unweighted loss; this gives the weights of
    :func:`seglab.networks.losses.inverse_frequency_weights` computed over the training set.

    Parameters
    ----------
    datalist : list of dict
        Training samples (``{"image": ..., "label": ...}``), e.g. ``@train#datalist``.
    num_classes : int
    balancing : {"inverse-frequency", "median-frequency"}
    transforms : callable or sequence of callables
        The bundle's deterministic loading transforms (e.g. ``@load_transforms``): they must
        turn a sample into class indices under ``key`` (colour decoding, mito targets).
    key : str
        Label key.

    Returns
    -------
    list of float
        ``num_classes`` weights averaging 1.
    """
    from monai.transforms import Compose

    from seglab.networks.losses import inverse_frequency_weights

    if not datalist:
        raise SeglabError("no training samples to count classes in", "check dataset_dir")
    chain = transforms if callable(transforms) else Compose(list(transforms))
    maps = []
    for entry in datalist:
        sample = chain(dict(entry))
        label = sample[key]
        maps.append(np.asarray(label.cpu() if hasattr(label, "cpu") else label).astype(np.int64))
    return inverse_frequency_weights(maps, num_classes, balancing=balancing)
