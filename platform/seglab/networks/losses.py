"""Segmentation losses that take logits and integer label maps, and class weights for them.

Every loss here is a :class:`torch.nn.Module` called as ``loss(logits, labels)`` with

- ``logits`` : ``(B, C, *spatial)`` float tensor, the network's raw class scores (no softmax),
  ``C == num_classes``;
- ``labels`` : ``(B, 1, *spatial)`` (MONAI's layout after ``LoadImage`` + ``EnsureChannelFirst``)
  or ``(B, *spatial)`` tensor of class indices ``0 .. num_classes - 1`` (integer dtype, or a float
  dtype holding whole numbers, as MONAI's image readers return them).

so a bundle needs no one-hot transform. Labels are checked once per call (one min/max pass):
a label outside ``0 .. num_classes - 1`` raises :class:`~seglab.errors.SeglabError`.

Losses (``make_loss`` names): ``"mse"`` (:class:`OneHotMSELoss`, study A's loss), ``"ce"``
(:class:`LabelCrossEntropyLoss`), ``"dice"`` (:class:`LabelDiceLoss`), ``"dicece"``
(:class:`LabelDiceCELoss`) and ``"focal"`` (:class:`LabelFocalLoss`). All take optional per-class
``class_weights`` (see :func:`inverse_frequency_weights`), normalised to average 1.

Binary segmentation (study B: mitochondrion/background, object/contour maps) uses the same code
with ``num_classes=2`` and a 2-channel network output (softmax over the two channels). A single
output channel with a sigmoid is not supported: ``num_classes`` must be at least 2.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceLoss, FocalLoss
from torch import nn
from torch.nn import functional

from seglab.errors import SeglabError

LOSS_NAMES = ("mse", "ce", "dice", "dicece", "focal")
"""Names accepted by :func:`make_loss` (and searched over by hyper-parameter studies)."""

BALANCING_METHODS = ("inverse-frequency", "median-frequency")
"""Class-weighting rules accepted by :func:`inverse_frequency_weights`."""


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise SeglabError(
            f"num_classes must be an integer >= 2, got {num_classes!r}",
            "pass the number of output channels of the network "
            "(binary segmentation: 2 channels, background and object)",
        )
    return int(num_classes)


def normalise_class_weights(class_weights: object, num_classes: int) -> torch.Tensor | None:
    """Return per-class weights as a float32 ``(num_classes,)`` tensor averaging 1, or None.

    Parameters
    ----------
    class_weights : sequence of float or None
        One positive, finite weight per class (any scale), or None for no weighting.
    num_classes : int
        Number of classes the weights must cover.

    Returns
    -------
    (num_classes,) Tensor of float32 or None
        ``class_weights * num_classes / sum(class_weights)``.
    """
    if class_weights is None:
        return None
    if isinstance(class_weights, torch.Tensor | np.ndarray):
        class_weights = class_weights.tolist()
    if isinstance(class_weights, str | bytes) or not isinstance(class_weights, Sequence):
        raise SeglabError(
            f"class_weights must be a sequence of {num_classes} numbers or None, "
            f"got {class_weights!r}",
            "pass e.g. inverse_frequency_weights(label_maps, num_classes), or null for none",
        )
    values = list(class_weights)
    ok = len(values) == num_classes and all(
        not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) and v > 0
        for v in values
    )
    if not ok:
        raise SeglabError(
            f"class_weights must be {num_classes} positive finite numbers (one per class), "
            f"got {values!r}",
            "give one weight > 0 per output channel, in class order",
        )
    weights = torch.tensor(values, dtype=torch.float64)
    return (weights * num_classes / weights.sum()).to(torch.float32)


class LabelMapLoss(nn.Module):
    """Base class: checks logits and label maps, then calls :meth:`compute`.

    Parameters
    ----------
    num_classes : int
        Number of classes = channels of the logits (>= 2).
    class_weights : sequence of float, optional
        One positive weight per class; normalised to average 1 and kept in the buffer
        ``class_weights`` (None: unweighted).
    """

    name = "label-map loss"

    def __init__(self, num_classes: int, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        self.register_buffer(
            "class_weights", normalise_class_weights(class_weights, self.num_classes)
        )

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return the loss (a scalar tensor) of ``logits`` against the label map ``labels``.

        Parameters
        ----------
        logits : (B, C, *spatial) Tensor of float
            Raw class scores, ``C == num_classes``.
        labels : (B, 1, *spatial) or (B, *spatial) Tensor of int or whole-number float
            Class index per pixel, ``0 <= label < num_classes``.

        Returns
        -------
        () Tensor of float
            The loss, averaged over the batch.
        """
        return self.compute(logits, self._label_map(logits, labels))

    def compute(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return the loss for checked ``logits`` and ``(B, 1, *spatial)`` int64 ``labels``."""
        raise NotImplementedError

    def _label_map(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.ndim < 3 or logits.shape[1] != self.num_classes or logits.shape[0] < 1:
            raise SeglabError(
                f"{self.name}: logits must have shape (B, {self.num_classes}, H, W), "
                f"got {tuple(logits.shape)}",
                "pass the network output before softmax, one channel per class",
            )
        if labels.ndim == logits.ndim - 1:
            labels = labels.unsqueeze(1)
        expected = (logits.shape[0], 1, *logits.shape[2:])
        if tuple(labels.shape) != expected:
            raise SeglabError(
                f"{self.name}: labels must have shape {expected} or "
                f"{(expected[0], *expected[2:])} to match logits {tuple(logits.shape)}, "
                f"got {tuple(labels.shape)}",
                "pass an integer label map (class index per pixel), not one-hot targets",
            )
        if labels.is_floating_point():
            if not torch.equal(labels, torch.round(labels)):
                raise SeglabError(
                    f"{self.name}: labels must be whole-number class indices, "
                    "got fractional values",
                    "load label maps with nearest-neighbour resampling and no intensity scaling",
                )
        elif labels.dtype == torch.bool:
            labels = labels.to(torch.int64)
        low, high = torch.aminmax(labels.detach())
        low, high = int(low), int(high)
        if low < 0 or high >= self.num_classes:
            raise SeglabError(
                f"{self.name}: labels must lie in 0..{self.num_classes - 1} "
                f"(num_classes={self.num_classes}), got values from {low} to {high}",
                "check num_classes against the label maps, or remap their values",
            )
        return labels.to(torch.int64).as_subclass(torch.Tensor)


def _one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``(B, 1, *spatial)`` int64 labels -> ``(B, C, *spatial)`` one-hot of ``dtype``."""
    return torch.movedim(functional.one_hot(labels[:, 0], num_classes), -1, 1).to(dtype)


class OneHotMSELoss(LabelMapLoss):
    """Mean squared error against one-hot targets: study A's training loss.

    Unweighted: ``loss = mean over b, c, pixels of (p[b, c, x] - onehot(labels)[b, c, x]) ** 2``,
    with ``p = softmax(logits, dim=1)`` (default) or ``p = logits`` (``softmax=False``).

    Weighted: every pixel's squared error (averaged over the classes) is weighted by the weight
    of its true class, and the loss is the weighted mean, as in torch's weighted cross-entropy:
    ``loss = sum_x w_{y_x} e_x / sum_x w_{y_x}`` with ``e_x = mean_c (p_c(x) - t_c(x)) ** 2``, so
    the weights' scale does not matter. (Weighting the class *channels* instead does not help a
    rare class: a heavy weight on its channel also penalises its score at every other pixel.
    On a synthetic 2 %-rare-class problem that variant kept the rare class at Dice 0, while this
    one reached 0.34-0.49; see tests/networks/test_losses.py.)

    The study applies MSE to "the network's class scores" against one-hot targets. With
    ``softmax=True`` the scores are class probabilities (bounded, as with a softmax output layer,
    the usual reading); ``softmax=False`` applies MSE to the raw scores, as literally written.

    Parameters
    ----------
    num_classes : int
        Number of classes (>= 2).
    softmax : bool
        Apply a softmax over the class axis before comparing with the one-hot targets.
    class_weights : sequence of float, optional
        Per-class weights given to the pixels of that (true) class.
    """

    name = "mse loss"

    def __init__(
        self,
        num_classes: int,
        softmax: bool = True,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes, class_weights)
        self.softmax = bool(softmax)

    def compute(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # noqa: D102
        scores = torch.softmax(logits, dim=1) if self.softmax else logits
        squared = (scores - _one_hot(labels, self.num_classes, scores.dtype)) ** 2
        if self.class_weights is None:
            return squared.mean()
        pixel_weights = self.class_weights.to(squared)[labels[:, 0]]
        return (pixel_weights * squared.mean(dim=1)).sum() / pixel_weights.sum()


class LabelCrossEntropyLoss(LabelMapLoss):
    """Softmax cross-entropy (:func:`torch.nn.functional.cross_entropy`) on label maps.

    With class weights this is torch's weighted mean: ``sum_x w_{y_x} l_x / sum_x w_{y_x}``, so
    the weights' scale does not matter.

    Parameters
    ----------
    num_classes : int
        Number of classes (>= 2).
    class_weights : sequence of float, optional
        Per-class weights (torch's ``weight``).
    """

    name = "ce loss"

    def compute(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # noqa: D102
        weight = None if self.class_weights is None else self.class_weights.to(logits)
        return functional.cross_entropy(logits, labels[:, 0], weight=weight)


class LabelDiceLoss(LabelMapLoss):
    """Soft Dice loss (MONAI ``DiceLoss(softmax=True, to_onehot_y=True)``) on label maps.

    ``1 - Dice`` per image and class (background included), times the class weight, averaged.

    Parameters
    ----------
    num_classes : int
        Number of classes (>= 2).
    class_weights : sequence of float, optional
        Per-class weights (MONAI's ``weight``), normalised to average 1.
    """

    name = "dice loss"

    def __init__(self, num_classes: int, class_weights: Sequence[float] | None = None) -> None:
        super().__init__(num_classes, class_weights)
        self.dice = DiceLoss(softmax=True, to_onehot_y=True, weight=self.class_weights)

    def compute(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.dice(logits, labels)


class LabelDiceCELoss(LabelMapLoss):
    """Dice + cross-entropy (MONAI ``DiceCELoss(softmax=True, to_onehot_y=True)``) on label maps.

    ``lambda_dice * dice + lambda_ce * ce``. MONAI 1.6.1 has one ``weight`` argument (no
    ``ce_weight``); it weights both the cross-entropy and the Dice term. The label map is passed
    as class indices, so the weighted cross-entropy is torch's weighted mean (as
    :class:`LabelCrossEntropyLoss`); MONAI given one-hot targets would divide by the pixel count.

    Parameters
    ----------
    num_classes : int
        Number of classes (>= 2).
    class_weights : sequence of float, optional
        Per-class weights for both terms, normalised to average 1.
    lambda_dice, lambda_ce : float
        Non-negative factors of the two terms.
    """

    name = "dicece loss"

    def __init__(
        self,
        num_classes: int,
        class_weights: Sequence[float] | None = None,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
    ) -> None:
        super().__init__(num_classes, class_weights)
        for arg, value in (("lambda_dice", lambda_dice), ("lambda_ce", lambda_ce)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise SeglabError(
                    f"dicece loss: {arg} must be a number >= 0, got {value!r}",
                    f"pass e.g. {arg}=1.0",
                )
        self.dicece = DiceCELoss(
            softmax=True,
            to_onehot_y=True,
            weight=self.class_weights,
            lambda_dice=float(lambda_dice),
            lambda_ce=float(lambda_ce),
        )

    def compute(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.dicece(logits, labels)


class LabelFocalLoss(LabelMapLoss):
    """Softmax focal loss (MONAI ``FocalLoss(use_softmax=True, to_onehot_y=True)``).

    ``-w_c (1 - p_c) ** gamma log p_c`` at each pixel's true class ``c``, averaged over batch,
    classes and pixels (MONAI's ``mean``); ``gamma=0`` is cross-entropy divided by ``C``.

    Parameters
    ----------
    num_classes : int
        Number of classes (>= 2).
    class_weights : sequence of float, optional
        Per-class weights (MONAI's ``weight``; with a softmax, the same as a per-class
        ``alpha``), normalised to average 1.
    gamma : float
        Focusing exponent (>= 0).
    """

    name = "focal loss"

    def __init__(
        self,
        num_classes: int,
        class_weights: Sequence[float] | None = None,
        gamma: float = 2.0,
    ) -> None:
        super().__init__(num_classes, class_weights)
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not gamma >= 0:
            raise SeglabError(
                f"focal loss: gamma must be a number >= 0, got {gamma!r}", "pass e.g. gamma=2.0"
            )
        self.focal = FocalLoss(
            to_onehot_y=True, use_softmax=True, gamma=float(gamma), weight=self.class_weights
        )

    def compute(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.focal(logits, labels)


_LOSSES: dict[str, type[LabelMapLoss]] = {
    "mse": OneHotMSELoss,
    "ce": LabelCrossEntropyLoss,
    "dice": LabelDiceLoss,
    "dicece": LabelDiceCELoss,
    "focal": LabelFocalLoss,
}


def make_loss(
    name: str,
    num_classes: int,
    class_weights: Sequence[float] | None = None,
    **options: object,
) -> LabelMapLoss:
    """Build the loss called ``name`` (bundle configs: ``_target_: seglab.networks.make_loss``).

    Parameters
    ----------
    name : str
        One of :data:`LOSS_NAMES`: ``"mse"``, ``"ce"``, ``"dice"``, ``"dicece"``, ``"focal"``.
    num_classes : int
        Number of classes = output channels of the network (>= 2; binary: 2).
    class_weights : sequence of float, optional
        One positive weight per class, e.g. from :func:`inverse_frequency_weights`; None: none.
    **options
        Further arguments of that loss's class: ``softmax`` (mse), ``lambda_dice`` and
        ``lambda_ce`` (dicece), ``gamma`` (focal).

    Returns
    -------
    LabelMapLoss
        A module called as ``loss(logits, labels)``.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _LOSSES:
        raise SeglabError(
            f"unknown loss {name!r}", f"use one of {', '.join(repr(n) for n in LOSS_NAMES)}"
        )
    loss_class = _LOSSES[key]
    allowed = [
        p
        for p in inspect.signature(loss_class.__init__).parameters
        if p not in ("self", "num_classes", "class_weights")
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SeglabError(
            f"loss {key!r} has no option(s) {', '.join(unknown)}",
            f"its options are {', '.join(allowed) if allowed else '(none)'}",
        )
    return loss_class(num_classes, class_weights=class_weights, **options)


@dataclass(frozen=True, eq=False)
class ClassPixelCounts:
    """Pixel counts per class over a set of label maps.

    Attributes
    ----------
    pixels : (C,) ndarray of int64
        Pixels of each class over all maps.
    pixels_where_present : (C,) ndarray of int64
        Total pixels of the maps in which the class occurs at least once (Eigen & Fergus'
        denominator for median-frequency balancing).
    """

    pixels: np.ndarray
    pixels_where_present: np.ndarray


def count_class_pixels(
    label_maps: np.ndarray | Iterable[np.ndarray], num_classes: int
) -> ClassPixelCounts:
    """Count the pixels of every class in one label map or an iterable of them (numpy only).

    Parameters
    ----------
    label_maps : ndarray of int or iterable of ndarray of int
        One label map (a single array of any shape is one map) or several, class indices
        ``0 .. num_classes - 1``; float arrays must hold whole numbers.
    num_classes : int
        Number of classes (>= 2).

    Returns
    -------
    ClassPixelCounts
        All zeros when there are no maps or no pixels.
    """
    num_classes = _check_num_classes(num_classes)
    maps = [label_maps] if isinstance(label_maps, np.ndarray) else label_maps
    pixels = np.zeros(num_classes, dtype=np.int64)
    where_present = np.zeros(num_classes, dtype=np.int64)
    for index, label_map in enumerate(maps):
        values = np.asarray(label_map).ravel()
        if values.size == 0:
            continue
        if values.dtype.kind == "f":
            if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
                raise SeglabError(
                    f"label map {index} holds non-integer values",
                    "pass label maps of class indices (nearest-neighbour resampled)",
                )
        elif values.dtype.kind not in "iub":
            raise SeglabError(
                f"label map {index} has dtype {values.dtype}, expected integers",
                "pass label maps of class indices",
            )
        low, high = values.min(), values.max()
        if low < 0 or high >= num_classes:
            raise SeglabError(
                f"label map {index} has values from {low} to {high}, "
                f"expected 0..{num_classes - 1} (num_classes={num_classes})",
                "check num_classes against the label maps, or remap their values",
            )
        counts = np.bincount(values.astype(np.int64), minlength=num_classes)
        pixels += counts
        where_present += np.where(counts > 0, values.size, 0)
    return ClassPixelCounts(pixels, where_present)


def inverse_frequency_weights(
    labels: np.ndarray | Iterable[np.ndarray] | ClassPixelCounts,
    num_classes: int,
    *,
    balancing: str = "inverse-frequency",
    smoothing: float = 1.0,
) -> list[float]:
    """Return class weights inversely proportional to class frequency, averaging 1 (numpy only).

    With ``n_c`` the pixels of class ``c``, ``s`` the smoothing and ``C`` the number of classes:

    - ``"inverse-frequency"``: ``f_c = (n_c + s) / (N + C s)`` with ``N = sum n_c``;
    - ``"median-frequency"`` (Eigen & Fergus 2015, used by SegNet): ``f_c = (n_c + s) / (M_c + s)``
      with ``M_c`` the total pixels of the maps in which ``c`` occurs; the paper's weight is
      ``median(f) / f_c``.

    In both, ``w_c = 1 / f_c`` rescaled so the weights average 1 (the losses rescale to mean 1
    anyway, so the paper's median scaling would give the same loss). The smoothing (add-``s``
    pseudo-pixels) keeps an absent class finite: under ``"inverse-frequency"`` it gets the largest
    weight; under ``"median-frequency"`` its ``f_c`` is 1 (the smallest weight), as it is in no map.
    No pixels at all gives equal weights.

    Parameters
    ----------
    labels : ndarray, iterable of ndarray, or ClassPixelCounts
        Label maps (see :func:`count_class_pixels`) or their counts.
    num_classes : int
        Number of classes (>= 2).
    balancing : str
        One of :data:`BALANCING_METHODS`.
    smoothing : float
        Pseudo-count ``s`` added to every class (>= 0; 0 raises if a class is absent).

    Returns
    -------
    list of float
        ``num_classes`` weights averaging 1, for ``make_loss(..., class_weights=...)``.
    """
    num_classes = _check_num_classes(num_classes)
    if balancing not in BALANCING_METHODS:
        raise SeglabError(
            f"unknown balancing {balancing!r}",
            f"use one of {', '.join(repr(b) for b in BALANCING_METHODS)}",
        )
    if (
        isinstance(smoothing, bool)
        or not isinstance(smoothing, int | float)
        or not (math.isfinite(smoothing) and smoothing >= 0)
    ):
        raise SeglabError(
            f"smoothing must be a finite number >= 0, got {smoothing!r}",
            "pass e.g. smoothing=1.0 (one pseudo-pixel per class)",
        )
    counts = (
        labels if isinstance(labels, ClassPixelCounts) else count_class_pixels(labels, num_classes)
    )
    if counts.pixels.shape != (num_classes,):
        raise SeglabError(
            f"counts cover {counts.pixels.shape[0]} classes, expected {num_classes}",
            "count the pixels with the same num_classes",
        )
    pixels = counts.pixels.astype(np.float64)
    if pixels.sum() == 0:
        return [1.0] * num_classes
    if balancing == "inverse-frequency":
        denominator = np.full(num_classes, pixels.sum() + num_classes * smoothing)
    else:
        denominator = counts.pixels_where_present.astype(np.float64) + smoothing
    numerator = pixels + smoothing
    if np.any(numerator == 0) or np.any(denominator == 0):
        absent = [int(c) for c in np.flatnonzero(counts.pixels == 0)]
        raise SeglabError(
            f"classes {absent} have no pixels, so their inverse frequency is infinite",
            "pass smoothing > 0 (e.g. 1.0) or give weights by hand",
        )
    weights = denominator / numerator
    return [float(w) for w in weights * num_classes / weights.sum()]
