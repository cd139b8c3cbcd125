"""Segmentation metrics of the two studies.

Study A (multi-class, eq. 3-4), with P, G the one-hot prediction and truth and U_c the indicator
of class c:

- per-class Dice ``D_c = 2 sum(P G U_c) / (sum(P U_c) + sum(G U_c))``;
- total Dice ``D = 2 sum(P G) / (sum P + sum G)``. For one-hot maps ``sum P = sum G`` = number of
  pixels, so D equals the fraction of correctly classified pixels (pixel accuracy, which is also
  the micro-averaged F1);
- "Avg." = the mean of the per-class Dice values.

A class absent from both prediction and truth has ``0 / 0``: its Dice is undefined. seglab
reports it as NaN (``empty_score``), leaves it out of the class mean (like MONAI's
``ignore_empty``), and lists it in ``DiceScores.absent``. A class absent from the truth but
predicted somewhere scores 0.

Study B (binary, per pixel): precision ``TP / (TP + FP)``, recall ``TP / (TP + FN)``,
``F = 2 TP / (2 TP + FP + FN)``; a ``0 / 0`` gives ``zero_division`` (0.0 by default, as
scikit-learn). The threshold sweep binarises a probability map 0..255 as ``prob >= t`` for
``t = 0..255``, takes per image the threshold with the highest F (the lowest such threshold on
ties), and uses the mean of those thresholds as the model's threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from seglab.errors import SeglabError


def _as_label_pair(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape:
        raise SeglabError(
            f"prediction shape {prediction.shape} differs from truth shape {truth.shape}",
            "compare label maps of the same size (resize or crop one of them)",
        )
    for name, a in (("prediction", prediction), ("truth", truth)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise SeglabError(
                f"{name} must hold integer class labels, got dtype {a.dtype}",
                "pass label maps (argmax of scores), not scores",
            )
    return prediction, truth


def confusion_matrix(prediction: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Count pixels per (true class, predicted class).

    Parameters
    ----------
    prediction, truth : (...) ndarray of int
        Label maps of equal shape, values in 0..n_classes-1.
    n_classes : int

    Returns
    -------
    (n_classes, n_classes) ndarray of int64
        ``m[i, j]`` = number of pixels of true class i predicted as class j.
    """
    prediction, truth = _as_label_pair(prediction, truth)
    if n_classes < 1:
        raise SeglabError(f"n_classes must be >= 1, got {n_classes}", "pass the class count")
    for name, a in (("prediction", prediction), ("truth", truth)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise SeglabError(
                f"{name} has labels {int(a.min())}..{int(a.max())}, outside 0..{n_classes - 1}",
                "check n_classes and the label encoding",
            )
    idx = truth.astype(np.int64).ravel() * n_classes + prediction.astype(np.int64).ravel()
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass(frozen=True)
class DiceScores:
    """Study A's Dice scores for one image or a pooled set.

    Attributes
    ----------
    per_class : (n_classes,) ndarray of float64
        D_c; NaN for classes absent from both prediction and truth.
    total : float
        Class-agnostic Dice D (= pixel accuracy for one-hot maps).
    mean : float
        Mean of the defined D_c ("Avg."); NaN when no class is defined.
    absent : tuple of int
        Classes absent from both prediction and truth.
    """

    per_class: np.ndarray
    total: float
    mean: float
    absent: tuple[int, ...] = field(default=())

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict[str, float]:
        """Flat dict ``{"dice_<name>": D_c, ..., "dice_mean": .., "dice_total": ..}``."""
        names = class_names or [f"c{i + 1}" for i in range(len(self.per_class))]
        out = {f"dice_{n}": float(v) for n, v in zip(names, self.per_class, strict=True)}
        out["dice_mean"] = float(self.mean)
        out["dice_total"] = float(self.total)
        return out


def dice_from_confusion(matrix: np.ndarray, *, empty_score: float = np.nan) -> DiceScores:
    """Dice scores from a confusion matrix (so several images can be pooled by summing).

    Parameters
    ----------
    matrix : (n_classes, n_classes) ndarray of int
        As returned by :func:`confusion_matrix`.
    empty_score : float
        Value of D_c for a class absent from both prediction and truth (NaN: undefined,
        excluded from the mean; 1.0 counts it as perfect).

    Returns
    -------
    DiceScores
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise SeglabError(f"a confusion matrix must be square, got {m.shape}", "pass (C, C)")
    tp = np.diag(m)
    denom = m.sum(axis=0) + m.sum(axis=1)  # sum(P U_c) + sum(G U_c)
    absent = denom == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(absent, empty_score, 2 * tp / np.where(absent, 1, denom))
    total_px = m.sum()
    total = float(2 * tp.sum() / (2 * total_px)) if total_px else float("nan")
    defined = per_class[~np.isnan(per_class)]
    mean = float(defined.mean()) if defined.size else float("nan")
    return DiceScores(per_class, total, mean, tuple(int(i) for i in np.flatnonzero(absent)))


def dice_scores(
    prediction: np.ndarray, truth: np.ndarray, n_classes: int, *, empty_score: float = np.nan
) -> DiceScores:
    """Study A's per-class Dice D_c, total Dice D and class mean for label maps.

    Parameters
    ----------
    prediction, truth : (...) ndarray of int
        Label maps of equal shape, values 0..n_classes-1.
    n_classes : int
    empty_score : float
        D_c of a class absent from both (see :func:`dice_from_confusion`).

    Returns
    -------
    DiceScores
    """
    return dice_from_confusion(
        confusion_matrix(prediction, truth, n_classes), empty_score=empty_score
    )


@dataclass(frozen=True)
class BinaryScores:
    """Pixel counts and scores of a binary segmentation."""

    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f: float


def _ratio(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), zero_division)


def _as_bool_pair(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape:
        raise SeglabError(
            f"prediction shape {prediction.shape} differs from truth shape {truth.shape}",
            "compare masks of the same size",
        )
    for name, a in (("prediction", prediction), ("truth", truth)):
        if a.dtype != bool and not (
            np.issubdtype(a.dtype, np.integer) and (a.size == 0 or a.min() >= 0)
        ):
            raise SeglabError(
                f"{name} must be a mask (bool or non-negative integers), got dtype {a.dtype}",
                "binarise probabilities first (or use threshold_sweep)",
            )
    return prediction.astype(bool), truth.astype(bool)


def binary_scores(
    prediction: np.ndarray, truth: np.ndarray, *, zero_division: float = 0.0
) -> BinaryScores:
    """Precision, recall and F of a binary mask (study B).

    Parameters
    ----------
    prediction, truth : (...) ndarray of bool or int
        Masks of equal shape; non-zero is foreground.
    zero_division : float
        Value of a score whose denominator is 0.

    Returns
    -------
    BinaryScores
    """
    p, t = _as_bool_pair(prediction, truth)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    tn = int(p.size - tp - fp - fn)
    return BinaryScores(
        tp,
        fp,
        fn,
        tn,
        float(_ratio(tp, tp + fp, zero_division)),
        float(_ratio(tp, tp + fn, zero_division)),
        float(_ratio(2 * tp, 2 * tp + fp + fn, zero_division)),
    )


@dataclass(frozen=True)
class ThresholdSweep:
    """Scores of one probability map binarised at every threshold ``prob >= t``.

    Attributes
    ----------
    thresholds : (256,) ndarray of int
        0..255.
    tp, fp, fn : (256,) ndarray of int64
        Pixel counts per threshold.
    precision, recall, f : (256,) ndarray of float64
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f: np.ndarray

    n_pixels: int = 0

    @classmethod
    def from_counts(
        cls, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, n_pixels: int, zero_division: float
    ) -> ThresholdSweep:
        """Build a sweep from per-threshold counts (256 each)."""
        return cls(
            np.arange(256),
            tp,
            fp,
            fn,
            _ratio(tp, tp + fp, zero_division),
            _ratio(tp, tp + fn, zero_division),
            _ratio(2 * tp, 2 * tp + fp + fn, zero_division),
            n_pixels,
        )

    @property
    def best_threshold(self) -> int:
        """Threshold with the highest F (the lowest one on ties)."""
        return int(self.thresholds[int(np.argmax(self.f))])

    def scores_at(self, threshold: int) -> BinaryScores:
        """Return the counts and scores when binarising at ``threshold`` (0..255)."""
        t = int(threshold)
        tp, fp, fn = int(self.tp[t]), int(self.fp[t]), int(self.fn[t])
        return BinaryScores(
            tp,
            fp,
            fn,
            self.n_pixels - tp - fp - fn,
            float(self.precision[t]),
            float(self.recall[t]),
            float(self.f[t]),
        )


def probability_to_uint8(probability: np.ndarray) -> np.ndarray:
    """Bring a probability map to CDeep3M's 0..255 scale.

    Parameters
    ----------
    probability : ndarray of uint8, or of float in [0, 1]
        Floats are scaled by 255 and rounded.

    Returns
    -------
    ndarray of uint8
    """
    a = np.asarray(probability)
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise SeglabError("probability map has NaN or infinite values", "fix the model output")
        if a.size and (a.min() < 0 or a.max() > 1):
            raise SeglabError(
                f"float probabilities must lie in [0, 1], got {a.min():.3g}..{a.max():.3g}",
                "apply a sigmoid/softmax first, or pass uint8 maps 0..255",
            )
        return np.rint(a * 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer) and (a.size == 0 or (a.min() >= 0 and a.max() <= 255)):
        return a.astype(np.uint8)
    raise SeglabError(
        f"a probability map must be uint8 0..255 or float 0..1, got dtype {a.dtype}",
        "convert it to one of these",
    )


def threshold_sweep(
    probability: np.ndarray, truth: np.ndarray, *, zero_division: float = 0.0
) -> ThresholdSweep:
    """Precision, recall and F at every threshold 0..255 (study B's sweep).

    Parameters
    ----------
    probability : (...) ndarray of uint8 0..255, or of float in [0, 1]
        Foreground probability per pixel (see :func:`probability_to_uint8`).
    truth : (...) ndarray of bool or int
        True mask, same shape.
    zero_division : float
        Value of a score whose denominator is 0.

    Returns
    -------
    ThresholdSweep
        Counts come from two 256-bin histograms, so the sweep costs one pass over the pixels.
    """
    prob = probability_to_uint8(probability)
    _, t = _as_bool_pair(np.zeros(prob.shape, bool), truth)
    if prob.shape != t.shape:
        raise SeglabError(
            f"probability shape {prob.shape} differs from truth shape {t.shape}",
            "compare maps of the same size",
        )
    pos_hist = np.bincount(prob[t].ravel(), minlength=256)
    neg_hist = np.bincount(prob[~t].ravel(), minlength=256)
    # prob >= t: counts at or above each threshold = reversed cumulative sums
    tp = np.cumsum(pos_hist[::-1])[::-1].astype(np.int64)
    fp = np.cumsum(neg_hist[::-1])[::-1].astype(np.int64)
    fn = int(pos_hist.sum()) - tp
    return ThresholdSweep.from_counts(tp, fp, fn, int(prob.size), zero_division)


@dataclass(frozen=True)
class ThresholdChoice:
    """Study B's model threshold and its scores over a set of evaluation images.

    Attributes
    ----------
    per_image_best : (n_images,) ndarray of int
        Best threshold of each image.
    threshold : float
        Mean of ``per_image_best``: the model's threshold.
    applied_threshold : int
        ``threshold`` rounded to the nearest integer, used to binarise.
    pooled : BinaryScores
        Scores at ``applied_threshold`` with counts pooled over all images.
    per_image : list of BinaryScores
        Scores of each image at ``applied_threshold``.
    sweep : ThresholdSweep
        The pooled sweep (for the precision/recall/F-versus-threshold plot).
    """

    per_image_best: np.ndarray
    threshold: float
    applied_threshold: int
    pooled: BinaryScores
    per_image: list[BinaryScores]
    sweep: ThresholdSweep


def choose_threshold(
    probabilities: Sequence[np.ndarray], truths: Sequence[np.ndarray]
) -> ThresholdChoice:
    """Pick the model threshold as study B does: the mean of per-image best thresholds.

    Parameters
    ----------
    probabilities : sequence of (...) ndarray
        Probability maps (uint8 0..255 or float 0..1), one per evaluation label image.
    truths : sequence of (...) ndarray of bool
        Matching true masks.

    Returns
    -------
    ThresholdChoice
    """
    if len(probabilities) != len(truths):
        raise SeglabError(
            f"got {len(probabilities)} probability maps and {len(truths)} label images",
            "pass one probability map per label image",
        )
    if not probabilities:
        raise SeglabError("no evaluation images given", "pass at least one labelled image")
    sweeps = [threshold_sweep(p, t) for p, t in zip(probabilities, truths, strict=True)]
    return choose_threshold_from_sweeps(sweeps)


def choose_threshold_from_sweeps(sweeps: Sequence[ThresholdSweep]) -> ThresholdChoice:
    """Study B's threshold rule on per-image sweeps (the maps themselves are not needed).

    The threshold is the mean of the per-image best thresholds, applied rounded half up; the
    scores at it are reported pooled (from the summed counts) and per image.

    Parameters
    ----------
    sweeps : sequence of ThresholdSweep
        One per evaluation label image, from :func:`threshold_sweep`.

    Returns
    -------
    ThresholdChoice
    """
    if not sweeps:
        raise SeglabError("no evaluation images given", "pass at least one labelled image")
    best = np.array([s.best_threshold for s in sweeps], dtype=np.int64)
    threshold = float(best.mean())
    applied = int(np.floor(threshold + 0.5))
    per_image = [s.scores_at(applied) for s in sweeps]
    pooled_sweep = ThresholdSweep.from_counts(
        sum(s.tp for s in sweeps),
        sum(s.fp for s in sweeps),
        sum(s.fn for s in sweeps),
        sum(s.n_pixels for s in sweeps),
        0.0,
    )
    pooled = pooled_sweep.scores_at(applied)
    return ThresholdChoice(best, threshold, applied, pooled, per_image, pooled_sweep)
