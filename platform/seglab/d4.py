"""The dihedral group D4: the 8 rotations and flips of a square grid.

Study A augments every tile by rotations of 0, 90, 180 and 270 degrees, each with and without a
horizontal flip: 8 versions per tile. The same group gives test-time augmentation: predict on each
transformed input, map each prediction back with the inverse, and combine.

Arrays are ``(..., H, W)``: the transforms act on the last two axes, leading axes (channels,
classes) are carried along. Element ``k`` (0..7) is "rotate by ``(k % 4) * 90`` degrees
counter-clockwise (``numpy.rot90``), then flip horizontally when ``k >= 4``".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seglab.errors import SeglabError


@dataclass(frozen=True)
class D4Element:
    """One element of D4: a rotation by ``quarter_turns * 90`` degrees, then an optional flip."""

    index: int
    quarter_turns: int
    flip: bool

    @property
    def name(self) -> str:
        """Short name, e.g. ``"rot90"`` or ``"rot270+flip"``."""
        return f"rot{self.quarter_turns * 90}" + ("+flip" if self.flip else "")

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Transform the last two axes of ``array`` (a view where numpy allows)."""
        out = np.rot90(array, self.quarter_turns, axes=(-2, -1))
        return out[..., ::-1] if self.flip else out

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply`: ``e.invert(e.apply(x))`` equals ``x``."""
        out = array[..., ::-1] if self.flip else array
        return np.rot90(out, -self.quarter_turns, axes=(-2, -1))


#: The 8 elements, identity first.
D4: tuple[D4Element, ...] = tuple(D4Element(k, k % 4, k >= 4) for k in range(8))

#: Named subsets for test-time augmentation.
D4_SUBSETS: dict[str, tuple[int, ...]] = {
    "off": (0,),
    "flips": (0, 4, 6, 2),  # identity, horizontal flip, vertical flip, both (= rot180)
    "all": tuple(range(8)),
}


def d4_element(index: int) -> D4Element:
    """Return element ``index`` (0..7) of :data:`D4`."""
    if not isinstance(index, (int, np.integer)) or not 0 <= index < 8:
        raise SeglabError(f"a D4 element index must be 0..7, got {index!r}", "use 0..7")
    return D4[int(index)]


def d4_subset(name: str) -> tuple[D4Element, ...]:
    """Elements of a named subset: ``"off"`` (identity), ``"flips"`` (4) or ``"all"`` (8)."""
    if name not in D4_SUBSETS:
        raise SeglabError(
            f"unknown test-time augmentation {name!r}", f"use one of {', '.join(D4_SUBSETS)}"
        )
    return tuple(D4[k] for k in D4_SUBSETS[name])


def _check(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim < 2:
        raise SeglabError(
            f"D4 transforms need at least 2 axes (..., H, W), got shape {array.shape}",
            "pass an image or a (C, H, W) array",
        )
    return array


def d4_orbit(array: np.ndarray) -> list[np.ndarray]:
    """All 8 transformed versions of ``array`` (..., H, W), in element order."""
    array = _check(array)
    return [e.apply(array) for e in D4]


def d4_merge(predictions: list[np.ndarray], elements: tuple[D4Element, ...]) -> np.ndarray:
    """Map predictions on transformed inputs back and average them (test-time augmentation).

    Parameters
    ----------
    predictions : list of (..., H', W') ndarray
        ``predictions[i]`` was computed on ``elements[i].apply(x)``.
    elements : tuple of D4Element

    Returns
    -------
    (..., H, W) ndarray of float32
        The mean of the back-transformed predictions.
    """
    if len(predictions) != len(elements) or not predictions:
        raise SeglabError(
            f"got {len(predictions)} predictions for {len(elements)} transforms",
            "pass one prediction per transform",
        )
    back = [
        e.invert(_check(p)).astype(np.float32) for p, e in zip(predictions, elements, strict=True)
    ]
    shapes = {b.shape for b in back}
    if len(shapes) != 1:
        raise SeglabError(
            f"back-transformed predictions differ in shape: {sorted(shapes)}",
            "check that each prediction belongs to its transform",
        )
    return np.mean(back, axis=0, dtype=np.float32)
