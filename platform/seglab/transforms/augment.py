"""Rotations and flips of the dihedral group D4 as invertible MONAI transforms.

Element ``k`` (0..7) of :data:`seglab.d4.D4` rotates the last two axes by ``(k % 4) * 90``
degrees counter-clockwise (``numpy.rot90``), then flips the last axis when ``k >= 4``. Study A
augments every tile with all 8 elements; :class:`RandD4` / :class:`RandD4d` draw one element per
call (the same for every key of a dictionary, so image and label stay aligned).

Inverse. On a ``MetaTensor`` the element is recorded in ``applied_operations`` and the affine
is updated (the same matrices as MONAI's ``Rotate90`` and ``Flip``), so ``transform.inverse``
and MONAI's ``Invertd`` undo it, e.g. on a prediction made for a test-time augmented input.
Plain numpy arrays and tensors carry no record: use :class:`D4Transform` with a known index.

numpy input goes through :meth:`seglab.d4.D4Element.apply`; torch tensors are rotated with
``torch.rot90`` / ``torch.flip`` on their own device (the same element, checked in the tests).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform
from monai.utils import TraceKeys

from seglab.d4 import D4_SUBSETS, D4Element, d4_element
from seglab.errors import SeglabError
from seglab.transforms._common import (
    ArrayLike,
    check_array,
    compose_affine,
    present_keys,
    same_kind,
)

__all__ = ["D4Transform", "D4Transformd", "RandD4", "RandD4d", "d4_index_map"]

_INDEX_KEY = "d4_index"


def d4_index_map(element: D4Element, shape: tuple[int, int]) -> np.ndarray:
    """Map output indices of ``element.apply`` back to input indices (homogeneous 3 x 3).

    Parameters
    ----------
    element : D4Element
    shape : (int, int)
        Input spatial shape (H, W) of the last two axes.

    Returns
    -------
    (3, 3) ndarray of float64
        ``T`` with ``input_index = T @ (y_out, x_out, 1)``.
    """
    h, w = int(shape[0]), int(shape[1])
    total = np.eye(3)
    for _ in range(element.quarter_turns):
        # np.rot90: out[a, b] = in[b, w - 1 - a]; the shape becomes (w, h)
        total = total @ np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, w - 1.0], [0.0, 0.0, 1.0]])
        h, w = w, h
    if element.flip:
        total = total @ np.array([[1.0, 0.0, 0.0], [0.0, -1.0, w - 1.0], [0.0, 0.0, 1.0]])
    return total


def _check_image(img: Any, name: str) -> None:
    check_array(img, name, "a channel-first (C, H, W) array")
    if img.ndim < 3:
        raise SeglabError(
            f"{name} needs a channel-first array (C, H, W), got shape {tuple(img.shape)}",
            "add a channel axis first (EnsureChannelFirst)",
        )


def _apply(img: ArrayLike, element: D4Element, inverse: bool = False) -> ArrayLike:
    """Apply (or undo) ``element`` on the last two axes; same kind out as in."""
    if isinstance(img, torch.Tensor):
        data = img.as_tensor() if isinstance(img, MetaTensor) else img
        if inverse:
            data = torch.flip(data, dims=(-1,)) if element.flip else data
            data = torch.rot90(data, -element.quarter_turns, dims=(-2, -1))
        else:
            data = torch.rot90(data, element.quarter_turns, dims=(-2, -1))
            data = torch.flip(data, dims=(-1,)) if element.flip else data
        out = same_kind(data, img)
    else:
        out = same_kind(element.invert(img) if inverse else element.apply(img), img)
    if isinstance(out, MetaTensor):
        h, w = (int(n) for n in img.shape[-2:])
        if inverse:  # the map is defined on the forward input, whose shape is (w, h) for odd turns
            h, w = (w, h) if element.quarter_turns % 2 else (h, w)
            compose_affine(out, np.linalg.inv(d4_index_map(element, (h, w))))
        else:
            compose_affine(out, d4_index_map(element, (h, w)))
    return out


def _parse_elements(elements: str | Sequence[int]) -> tuple[int, ...]:
    if isinstance(elements, str):
        if elements not in D4_SUBSETS:
            raise SeglabError(
                f"unknown D4 subset {elements!r}",
                f"use one of {', '.join(D4_SUBSETS)}, or a list of element indices 0..7",
            )
        return D4_SUBSETS[elements]
    try:
        indices = tuple(d4_element(k).index for k in elements)
    except TypeError as err:
        raise SeglabError(
            f"elements must be a subset name or a list of indices 0..7, got {elements!r}",
            "pass e.g. 'all' or [0, 1, 2, 3]",
        ) from err
    if not indices:
        raise SeglabError("elements is empty", "pass at least one element index, e.g. [0]")
    return indices


def _check_prob(prob: float) -> float:
    try:
        value = float(prob)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise SeglabError(f"prob must be in [0, 1], got {prob!r}", "pass e.g. prob=1.0")
    return value


def _recorded_index(
    transform: InvertibleTransform, data: Any, name: str, any_instance: bool = False
) -> int | None:
    """Pop the transform's record from a MetaTensor: the element index, or None if not applied.

    ``any_instance`` accepts the latest record of the same class made by another instance (for
    the deterministic :class:`D4Transform`, whose instances with one index are interchangeable).
    """
    if not isinstance(data, MetaTensor):
        raise SeglabError(
            f"{name}.inverse needs the MetaTensor the transform returned (it records the element), "
            f"got {type(data).__name__}",
            "keep MetaTensors (set_track_meta(True)), or undo with D4Transform(index).inverse",
        )
    ops = data.applied_operations
    same_class = bool(ops) and ops[-1].get(TraceKeys.CLASS_NAME) == type(transform).__name__
    try:
        info = transform.pop_transform(data, check=not (any_instance and same_class))
    except (ValueError, RuntimeError) as err:
        raise SeglabError(
            f"{name}.inverse found no record of {name} on this MetaTensor ({err})",
            "invert only data this transform returned, in reverse order of the transforms",
        ) from err
    if not info.get(TraceKeys.DO_TRANSFORM, True):
        return None
    return int(info[TraceKeys.EXTRA_INFO][_INDEX_KEY])


def _check_same_element(recorded: int | None, element: D4Element) -> None:
    if recorded != element.index:
        raise SeglabError(
            f"the MetaTensor records D4 element {recorded}, but this transform undoes element "
            f"{element.index}",
            "invert with the transform (or index) that was applied",
        )


class D4Transform(InvertibleTransform):
    """Apply one fixed element of D4 to the last two axes.

    Parameters
    ----------
    index : int
        Element 0..7 of :data:`seglab.d4.D4` (0 is the identity).

    Notes
    -----
    Call with a channel-first array ``(C, H, W)`` (or ``(C, ..., H, W)``), numpy or torch;
    returns the same kind with ``(H, W)`` swapped for odd quarter turns. :meth:`inverse` undoes
    the element on any array (for a ``MetaTensor`` it also pops the record and restores the
    affine).
    """

    def __init__(self, index: int) -> None:
        self.element = d4_element(index)

    def __call__(self, img: ArrayLike) -> ArrayLike:
        """Transform ``img`` (C, ..., H, W)."""
        _check_image(img, type(self).__name__)
        out = _apply(img, self.element)
        if isinstance(out, MetaTensor):
            self.push_transform(out, extra_info={_INDEX_KEY: self.element.index})
        return out

    def inverse(self, data: ArrayLike) -> ArrayLike:
        """Undo the element on ``data`` (C, ..., H', W')."""
        _check_image(data, type(self).__name__)
        if isinstance(data, MetaTensor):
            recorded = _recorded_index(self, data, type(self).__name__, any_instance=True)
            _check_same_element(recorded, self.element)
        return _apply(data, self.element, inverse=True)


class D4Transformd(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`D4Transform`: the same element on every key.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of channel-first arrays (C, ..., H, W).
    index : int
        Element 0..7 of :data:`seglab.d4.D4`.
    allow_missing_keys : bool
        Skip keys that are not in the data instead of raising.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        index: int,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = D4Transform(index)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Transform each key's array."""
        d = dict(data)
        for key in present_keys(self, d):
            _check_image(d[key], type(self).__name__)
            d[key] = _apply(d[key], self.transform.element)
            if isinstance(d[key], MetaTensor):
                self.push_transform(d[key], extra_info={_INDEX_KEY: self.transform.element.index})
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Undo the element on each key's array."""
        d = dict(data)
        for key in present_keys(self, d):
            _check_image(d[key], type(self).__name__)
            if isinstance(d[key], MetaTensor):
                recorded = _recorded_index(self, d[key], type(self).__name__, any_instance=True)
                _check_same_element(recorded, self.transform.element)
            d[key] = _apply(d[key], self.transform.element, inverse=True)
        return d


class RandD4(RandomizableTransform, InvertibleTransform):
    """With probability ``prob``, apply a random element of D4 to the last two axes.

    Parameters
    ----------
    prob : float
        Probability of transforming at all; otherwise the input comes back unchanged. The
        default 1.0 with ``elements="all"`` gives each of the 8 elements with probability 1/8,
        the identity included (study A's 8-fold augmentation).
    elements : str or sequence of int
        Elements to draw from, uniformly: a subset name of :data:`seglab.d4.D4_SUBSETS`
        (``"all"``, ``"flips"``, ``"off"``) or a list of indices 0..7.

    Notes
    -----
    Randomness comes from ``self.R`` (``set_random_state(seed)`` makes it repeatable). The
    element drawn is recorded on a ``MetaTensor`` for :meth:`inverse`.
    """

    def __init__(self, prob: float = 1.0, elements: str | Sequence[int] = "all") -> None:
        RandomizableTransform.__init__(self, _check_prob(prob))
        self.elements = _parse_elements(elements)
        self._index = 0

    def randomize(self, data: Any = None) -> None:
        """Draw whether to transform and which element."""
        super().randomize(None)
        self._index = int(self.elements[self.R.randint(len(self.elements))])

    def __call__(self, img: ArrayLike, randomize: bool = True) -> ArrayLike:
        """Transform ``img`` (C, ..., H, W); ``randomize=False`` reuses the last draw."""
        _check_image(img, type(self).__name__)
        if randomize:
            self.randomize()
        index = self._index if self._do_transform else 0
        out = _apply(img, d4_element(index))
        if isinstance(out, MetaTensor):
            self.push_transform(out, extra_info={_INDEX_KEY: index})
        return out

    def inverse(self, data: ArrayLike) -> ArrayLike:
        """Undo the recorded element on a ``MetaTensor`` this transform returned."""
        index = _recorded_index(self, data, type(self).__name__)
        return data if index is None else _apply(data, d4_element(index), inverse=True)


class RandD4d(RandomizableTransform, MapTransform, InvertibleTransform):
    """Dictionary version of :class:`RandD4`: one random element per call, for all keys.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of channel-first arrays with the same last two axes (image and label).
    prob : float
        Probability of transforming; see :class:`RandD4`.
    elements : str or sequence of int
        Elements to draw from; see :class:`RandD4`.
    allow_missing_keys : bool
        Skip keys that are not in the data instead of raising.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        prob: float = 1.0,
        elements: str | Sequence[int] = "all",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, _check_prob(prob))
        self.elements = _parse_elements(elements)
        self._index = 0

    def randomize(self, data: Any = None) -> None:
        """Draw whether to transform and which element."""
        super().randomize(None)
        self._index = int(self.elements[self.R.randint(len(self.elements))])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Transform every key's array with the same random element."""
        d = dict(data)
        keys = present_keys(self, d)
        for key in keys:
            _check_image(d[key], type(self).__name__)
        shapes = {tuple(d[key].shape[-2:]) for key in keys}
        if len(shapes) > 1:
            raise SeglabError(
                f"{type(self).__name__}: the keys {keys} have different spatial shapes "
                f"{sorted(shapes)}, so one rotation cannot keep them aligned",
                "resize or crop image and label to the same (H, W) first",
            )
        self.randomize()
        index = self._index if self._do_transform else 0
        element = d4_element(index)
        for key in keys:
            d[key] = _apply(d[key], element)
            if isinstance(d[key], MetaTensor):
                self.push_transform(d[key], extra_info={_INDEX_KEY: index})
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Undo the recorded element on each key (the ``MetaTensor`` values it returned)."""
        d = dict(data)
        for key in present_keys(self, d):
            index = _recorded_index(self, d[key], type(self).__name__)
            if index is not None:
                d[key] = _apply(d[key], d4_element(index), inverse=True)
        return d
