"""Helpers shared by the transforms: array kinds, key checks and affine bookkeeping.

Array transforms accept a numpy array, a torch tensor or a MONAI ``MetaTensor`` and return the
same kind. The numerical core works on numpy, so tensors go to numpy on the CPU and come back
on their device (:func:`as_numpy`, :func:`same_kind`); a ``MetaTensor`` result carries a copy
of the input's metadata and applied operations.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_numpy

from seglab.errors import SeglabError

ArrayLike = np.ndarray | torch.Tensor


def check_array(img: Any, name: str, what: str) -> None:
    """Raise a one-line error unless ``img`` is a numpy array or a torch tensor."""
    if not isinstance(img, np.ndarray | torch.Tensor):
        raise SeglabError(
            f"{name} takes a numpy array or a torch tensor, got {type(img).__name__}",
            f"pass {what}",
        )


def as_numpy(img: ArrayLike) -> np.ndarray:
    """Return the pixels of ``img`` as a numpy array (on the CPU, without gradient)."""
    if isinstance(img, np.ndarray):
        return img
    return convert_to_numpy(img)


def same_kind(result: np.ndarray | torch.Tensor, like: ArrayLike) -> ArrayLike:
    """Return ``result`` as the kind of ``like``, keeping ``result``'s dtype.

    A numpy ``like`` gives a contiguous numpy array; a tensor gives a tensor on ``like``'s
    device; a ``MetaTensor`` gives a ``MetaTensor`` with a (shallow) copy of ``like``'s meta
    dictionary and applied operations. Replace entries of the copy's meta (``out.affine = ...``,
    ``out.meta[key] = ...``); do not modify nested values in place.
    """
    if isinstance(result, np.ndarray):
        result = np.ascontiguousarray(result)
        if not result.flags.writeable:  # e.g. a tile of a read-only strided view
            result = result.copy()
    if isinstance(like, np.ndarray):
        return convert_to_numpy(result)
    dtype = result.dtype
    out, *_ = convert_to_dst_type(result, dst=like, dtype=dtype)
    return out


def present_keys(transform: MapTransform, data: Mapping[Hashable, Any]) -> list[Hashable]:
    """Return the transform's keys found in ``data``; a missing key is an error unless allowed."""
    if not isinstance(data, Mapping):
        raise SeglabError(
            f"{type(transform).__name__} takes a dictionary of arrays, got {type(data).__name__}",
            "pass a dict such as {'image': ..., 'label': ...}, or use the array transform",
        )
    missing = [k for k in transform.keys if k not in data]
    if missing and not transform.allow_missing_keys:
        raise SeglabError(
            f"{type(transform).__name__}: key(s) {missing} not in the data, which has keys "
            f"{list(data)}",
            "fix the transform's keys, or pass allow_missing_keys=True",
        )
    return [k for k in transform.keys if k in data]


def as_key_tuple(keys: Hashable | Sequence[Hashable] | None) -> tuple[Hashable, ...]:
    """Normalise one key or a sequence of keys to a tuple (None gives an empty tuple)."""
    if keys is None:
        return ()
    if isinstance(keys, str) or not isinstance(keys, Sequence):
        return (keys,)
    return tuple(keys)


def embed_last_two(matrix: np.ndarray, spatial_ndim: int) -> np.ndarray:
    """Place a 3 x 3 homogeneous map of the last two spatial axes into ``spatial_ndim`` axes.

    Parameters
    ----------
    matrix : (3, 3) ndarray
        Maps output indices (y, x, 1) of the last two axes to input indices.
    spatial_ndim : int
        Number of spatial axes of the array (2 or more).

    Returns
    -------
    (spatial_ndim + 1, spatial_ndim + 1) ndarray of float64
    """
    full = np.eye(spatial_ndim + 1, dtype=np.float64)
    idx = [spatial_ndim - 2, spatial_ndim - 1, spatial_ndim]
    full[np.ix_(idx, idx)] = matrix
    return full


def compose_affine(out: ArrayLike, index_map: np.ndarray) -> None:
    """Update a ``MetaTensor``'s affine after an index-space change of its last two axes.

    ``index_map`` (3 x 3, homogeneous) maps each output index of the last two axes to the input
    index it came from; the new affine is ``affine @ index_map`` (MONAI's convention for
    crops, flips and rotations). Plain arrays, and affines of lower rank than the axes touched,
    are left alone.
    """
    if not isinstance(out, MetaTensor):
        return
    affine = out.affine
    rank = int(affine.shape[-1]) - 1
    spatial_ndim = out.ndim - 1
    if affine.ndim != 2 or spatial_ndim < 2 or spatial_ndim > rank:
        return
    full = to_affine_nd(rank, embed_last_two(index_map, spatial_ndim))
    new = affine.to(torch.float64) @ torch.as_tensor(full, dtype=torch.float64)
    out.affine = new


def to_json(record: Any) -> str:
    """Serialise a record for a meta dictionary (strings collate; nested None values do not)."""
    return json.dumps(record, separators=(",", ":"))
