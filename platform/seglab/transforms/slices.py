"""2.5D inputs: a slice of a stack with its neighbours as channels.

CDeep3M (study B) trains three models that see 1, 3 and 5 adjacent slices. From a stack
``(1, Z, H, W)`` (or ``(Z, H, W)``) and a slice index ``z``, :class:`AdjacentSlices` returns
``(k, H, W)``: slices ``z - k // 2 ... z + k // 2`` in order, the centre slice in the middle
channel. Beyond the ends of the stack the slices are mirrored (``mode="mirror"``: slice -1 is
slice 1 and slice Z is slice Z - 2, as :data:`seglab.tiling.PAD_MODES`' ``"mirror"``); a
stack shorter than the reach repeats the mirroring, and a one-slice stack repeats its slice.

Labels get only the centre slice ``(1, H, W)`` (:class:`AdjacentSlicesd`'s ``label_keys``).
Without an index, every slice is taken: ``(Z, k, H, W)``, a batch of 2.5D inputs for a stack.

On a ``MetaTensor`` the meta gains ``"slice_index"`` (for one slice) and ``"adjacent_slices"``
(k); the affine of a single slice becomes that of the centre slice's plane (voxel axes y, x).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, Transform

from seglab.errors import SeglabError
from seglab.tiling import PAD_MODES
from seglab.transforms._common import (
    ArrayLike,
    as_key_tuple,
    as_numpy,
    check_array,
    present_keys,
    same_kind,
)

__all__ = [
    "AdjacentSlices",
    "AdjacentSlicesd",
    "RandAdjacentSlicesd",
    "adjacent_slice_indices",
]

SliceMode = Literal["mirror", "symmetric", "edge"]
SLICE_COUNTS = (1, 3, 5)


def _check_count(num_slices: Any) -> int:
    if isinstance(num_slices, bool) or num_slices not in SLICE_COUNTS:
        raise SeglabError(
            f"num_slices must be 1, 3 or 5 (CDeep3M's 1fm, 3fm, 5fm models), got {num_slices!r}",
            "pass num_slices=1, 3 or 5",
        )
    return int(num_slices)


def _check_mode(mode: Any) -> str:
    if mode not in ("mirror", "symmetric", "edge"):
        raise SeglabError(f"unknown slice mode {mode!r}", "use 'mirror', 'symmetric' or 'edge'")
    return str(mode)


def adjacent_slice_indices(
    depth: int, index: int, num_slices: int, mode: SliceMode = "mirror"
) -> np.ndarray:
    """Return the indices of the ``num_slices`` slices centred on ``index`` (stack of ``depth``).

    Parameters
    ----------
    depth : int
        Number of slices Z (at least 1).
    index : int
        Centre slice, ``0 <= index < depth``.
    num_slices : {1, 3, 5}
    mode : {"mirror", "symmetric", "edge"}
        How positions beyond the ends map into the stack (numpy.pad's "reflect", "symmetric",
        "edge").

    Returns
    -------
    (num_slices,) ndarray of int64
    """
    k = _check_count(num_slices)
    mode = _check_mode(mode)
    if not 0 <= index < depth:
        raise SeglabError(
            f"slice index {index} is outside the stack of {depth} slices",
            f"pass an index in 0..{depth - 1}",
        )
    reach = k // 2
    padded = np.pad(np.arange(depth), reach, mode=PAD_MODES[mode])  # type: ignore[call-overload]
    return padded[index : index + k].astype(np.int64)


def _stack_shape(img: Any, name: str) -> tuple[int, int, int]:
    """Check a (1, Z, H, W) or (Z, H, W) stack and return its (Z, H, W)."""
    check_array(img, name, "a stack (1, Z, H, W) or (Z, H, W)")
    if not (img.ndim == 3 or (img.ndim == 4 and img.shape[0] == 1)):
        raise SeglabError(
            f"{name} needs a stack (1, Z, H, W) or (Z, H, W), got shape {tuple(img.shape)}",
            "pass a single-channel stack",
        )
    if min(img.shape) == 0:
        raise SeglabError(
            f"{name} got an empty stack of shape {tuple(img.shape)}", "pass a stack with slices"
        )
    return tuple(int(n) for n in img.shape[-3:])  # type: ignore[return-value]


def _slice_plane_affine(out: MetaTensor, index: int) -> None:
    """Affine of the centre slice's plane: voxel axes (y, x), then z as a third axis."""
    affine = out.affine
    if affine.ndim != 2 or tuple(affine.shape) != (4, 4):
        return
    moved = affine.to(torch.float64).clone()
    moved[:, 3] += moved[:, 0] * float(index)
    out.affine = moved[:, [1, 2, 0, 3]]


class AdjacentSlices(Transform):
    """Take a slice of a stack together with its neighbours as channels.

    Parameters
    ----------
    num_slices : {1, 3, 5}
        Slices per input, k.
    mode : {"mirror", "symmetric", "edge"}
        How slices beyond the stack ends are filled (see :func:`adjacent_slice_indices`).

    Notes
    -----
    Call with a stack ``(1, Z, H, W)`` or ``(Z, H, W)`` and ``index``: returns ``(k, H, W)``;
    with ``index=None``: every slice, ``(Z, k, H, W)``. Same kind and dtype as the input.
    """

    def __init__(self, num_slices: int = 3, mode: SliceMode = "mirror") -> None:
        self.num_slices = _check_count(num_slices)
        self.mode = _check_mode(mode)

    def __call__(self, img: ArrayLike, index: int | None = None) -> ArrayLike:
        """Return slice ``index`` and its neighbours (all slices when ``index`` is None)."""
        depth = _stack_shape(img, type(self).__name__)[0]
        stack = as_numpy(img).reshape(img.shape[-3:])
        if index is None:
            table = np.stack(
                [adjacent_slice_indices(depth, z, self.num_slices, self.mode) for z in range(depth)]
            )
            out = same_kind(stack[table], img)
            if isinstance(out, MetaTensor):
                out.meta["adjacent_slices"] = self.num_slices
            return out
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise SeglabError(f"slice index must be an integer, got {index!r}", "pass e.g. index=0")
        chosen = adjacent_slice_indices(depth, int(index), self.num_slices, self.mode)
        out = same_kind(stack[chosen], img)
        if isinstance(out, MetaTensor):
            out.meta["slice_index"] = int(index)
            out.meta["adjacent_slices"] = self.num_slices
            _slice_plane_affine(out, int(index))
        return out


def _common_depth(data: Mapping[Hashable, Any], keys: list[Hashable], name: str) -> int:
    shapes = {_stack_shape(data[k], name) for k in keys}
    if len(shapes) != 1:
        raise SeglabError(
            f"{name}: the keys {keys} hold stacks of different shapes {sorted(shapes)}",
            "pass image and label stacks of the same (Z, H, W)",
        )
    return shapes.pop()[0]


class AdjacentSlicesd(MapTransform):
    """Dictionary version of :class:`AdjacentSlices`: k slices of images, centre of labels.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of image stacks; they get ``num_slices`` slices as channels.
    label_keys : str or sequence of str
        Keys of label stacks; they get the centre slice only, ``(1, H, W)``.
    num_slices : {1, 3, 5}
    index : int, optional
        Slice to take; None takes every slice (``(Z, k, H, W)`` and ``(Z, 1, H, W)``).
    mode : {"mirror", "symmetric", "edge"}
    allow_missing_keys : bool
        Skip keys that are not in the data instead of raising.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        label_keys: Hashable | Sequence[Hashable] = (),
        num_slices: int = 3,
        index: int | None = None,
        mode: SliceMode = "mirror",
        allow_missing_keys: bool = False,
    ) -> None:
        self.image_keys = as_key_tuple(keys)
        self.label_keys = as_key_tuple(label_keys)
        super().__init__(self.image_keys + self.label_keys, allow_missing_keys)
        self.images = AdjacentSlices(num_slices, mode)
        self.labels = AdjacentSlices(1, mode)
        self.index = index

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each stack by its 2.5D slice(s)."""
        d = dict(data)
        keys = present_keys(self, d)
        if keys:
            _common_depth(d, keys, type(self).__name__)
        for key in keys:
            slicer = self.images if key in self.image_keys else self.labels
            d[key] = slicer(d[key], self.index)
        return d


class RandAdjacentSlicesd(Randomizable, MapTransform):
    """Pick a random slice ``z`` of the stacks: k slices of images, slice z of labels.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of image stacks ``(1, Z, H, W)``; they become ``(k, H, W)``.
    label_keys : str or sequence of str
        Keys of label stacks; they become ``(1, H, W)`` (slice z).
    num_slices : {1, 3, 5}
    mode : {"mirror", "symmetric", "edge"}
    allow_missing_keys : bool
        Skip keys that are not in the data instead of raising.

    Notes
    -----
    ``z`` is uniform over ``0..Z-1`` (``self.R``; ``set_random_state(seed)`` repeats it), the
    same for every key of one call.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        label_keys: Hashable | Sequence[Hashable] = (),
        num_slices: int = 3,
        mode: SliceMode = "mirror",
        allow_missing_keys: bool = False,
    ) -> None:
        self.image_keys = as_key_tuple(keys)
        self.label_keys = as_key_tuple(label_keys)
        MapTransform.__init__(self, self.image_keys + self.label_keys, allow_missing_keys)
        self.images = AdjacentSlices(num_slices, mode)
        self.labels = AdjacentSlices(1, mode)
        self._index = 0

    def randomize(self, data: int) -> None:
        """Draw the slice index for a stack of ``data`` slices."""
        self._index = int(self.R.randint(data))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each stack by the 2.5D input (or label) at a random slice."""
        d = dict(data)
        keys = present_keys(self, d)
        if not keys:
            return d
        self.randomize(_common_depth(d, keys, type(self).__name__))
        for key in keys:
            slicer = self.images if key in self.image_keys else self.labels
            d[key] = slicer(d[key], self._index)
        return d
