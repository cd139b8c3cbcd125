"""Study B's training targets and output maps: one 3-class network for objects and contours.

The mito bundle trains one network with three classes, ``0`` background, ``1`` mitochondrion
interior and ``2`` mitochondrion contour (the outline drawn for CDeep3M's contour model). The
contours of seglab's SEM phantoms are inner outlines, so they lie inside the instance masks;
the classes partition the voxels and one softmax ``(P0, P1, P2)`` gives both of study B's maps:

* object probability  ``P1 + P2 = 1 - P0`` (the filled mitochondrion),
* contour probability ``P2``.

:class:`MitoTargets` turns (instance labels, contour map) into the class map;
:class:`MitoMaps` turns class probabilities (or a class map, for the ground truth) into the
two-channel ``(object, contour)`` maps that metrics, thresholds and writers use.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from monai.transforms import MapTransform, Transform

from seglab.errors import SeglabError
from seglab.transforms._common import ArrayLike, as_numpy, check_array, present_keys, same_kind

__all__ = [
    "BACKGROUND",
    "CONTOUR",
    "INTERIOR",
    "MITO_CLASS_NAMES",
    "MitoMaps",
    "MitoMapsd",
    "MitoTargets",
    "MitoTargetsd",
]

BACKGROUND, INTERIOR, CONTOUR = 0, 1, 2
#: Class names of the mito bundle's network output, by index.
MITO_CLASS_NAMES: tuple[str, ...] = ("background", "interior", "contour")

MapSource = Literal["probabilities", "classes"]


class MitoTargets(Transform):
    """Build the 3-class map (0 background, 1 interior, 2 contour) from instances and contours.

    Notes
    -----
    Call as ``targets(instances, contours=None)``:

    instances : (1, Z, H, W), (Z, H, W), (1, H, W) or (H, W) array of int
        Instance labels, 0 = background (any non-zero value is a mitochondrion; a binary mask
        works too).
    contours : array of the same shape, optional
        Non-zero on object outlines (seglab writes 255). None gives classes 0 and 1 only.

    Returns the class map as uint8 of the same shape and kind (numpy, tensor or ``MetaTensor``
    with the instances' meta). Contour voxels are class 2 wherever they lie, also outside the
    instance masks (hand-drawn contours may stray), so the object is ``instances > 0`` or
    ``contours > 0``.
    """

    def __call__(self, instances: ArrayLike, contours: ArrayLike | None = None) -> ArrayLike:
        """Return the class map of ``instances`` and ``contours``."""
        name = type(self).__name__
        check_array(instances, name, "an instance label array")
        objects = as_numpy(instances) != 0
        classes = objects.astype(np.uint8)
        if contours is not None:
            check_array(contours, name, "a contour map of the instances' shape")
            if tuple(contours.shape) != tuple(instances.shape):
                raise SeglabError(
                    f"{name}: contours of shape {tuple(contours.shape)} do not match instances "
                    f"of shape {tuple(instances.shape)}",
                    "pass the contour map of the same stack",
                )
            classes[as_numpy(contours) != 0] = CONTOUR
        return same_kind(classes, instances)


class MitoTargetsd(MapTransform):
    """Dictionary version of :class:`MitoTargets`: the label key becomes the class map.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of instance label arrays (usually ``"label"``).
    contour_key : str
        Key of the contour map; when it is absent the class map has classes 0 and 1 only.
    drop_contour : bool
        Remove ``contour_key`` (and its meta entry) from the data after use, so later
        transforms and collation never see it.
    allow_missing_keys : bool
        Skip label keys that are not in the data instead of raising.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        contour_key: Hashable = "contour",
        drop_contour: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.contour_key = contour_key
        self.drop_contour = drop_contour
        self.targets = MitoTargets()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each label by its class map."""
        d = dict(data)
        contours = d.get(self.contour_key)
        for key in present_keys(self, d):
            d[key] = self.targets(d[key], contours)
        if self.drop_contour:
            d.pop(self.contour_key, None)
            d.pop(f"{self.contour_key}_meta_dict", None)
        return d


class MitoMaps(Transform):
    """Turn 3-class probabilities or a class map into ``(object, contour)`` maps.

    Parameters
    ----------
    source : {"probabilities", "classes"}
        ``"probabilities"``: the input is ``(3, *spatial)`` softmax output; the result is
        ``(2, *spatial)`` float: ``1 - P0`` and ``P2``. ``"classes"``: the input is a
        ``(1, *spatial)`` class map (0/1/2, e.g. from :class:`MitoTargets`); the result is
        ``(2, *spatial)`` float32 of 0/1: ``class > 0`` and ``class == 2``.

    Notes
    -----
    Same kind as the input (a ``MetaTensor`` keeps its meta).
    """

    def __init__(self, source: MapSource = "probabilities") -> None:
        if source not in ("probabilities", "classes"):
            raise SeglabError(
                f"unknown source {source!r}", "use 'probabilities' (softmax) or 'classes'"
            )
        self.source = source

    def __call__(self, img: ArrayLike) -> ArrayLike:
        """Return the ``(2, *spatial)`` object and contour maps of ``img``."""
        name = type(self).__name__
        check_array(img, name, "a channel-first array")
        want = 3 if self.source == "probabilities" else 1
        if img.ndim < 2 or img.shape[0] != want:
            raise SeglabError(
                f"{name}(source={self.source!r}) needs {want} channel(s) first, got shape "
                f"{tuple(img.shape)}",
                "apply softmax to the 3-class output" if want == 3 else "pass a (1, ...) class map",
            )
        if isinstance(img, torch.Tensor):
            values = img.as_tensor() if hasattr(img, "as_tensor") else img
            if self.source == "probabilities":
                maps = torch.stack([1 - values[BACKGROUND], values[CONTOUR]])
            else:
                maps = torch.stack([values[0] != BACKGROUND, values[0] == CONTOUR]).float()
            return same_kind(maps, img)
        if self.source == "probabilities":
            maps = np.stack([1 - img[BACKGROUND], img[CONTOUR]])
        else:
            maps = np.stack([img[0] != BACKGROUND, img[0] == CONTOUR]).astype(np.float32)
        return same_kind(maps, img)


class MitoMapsd(MapTransform):
    """Dictionary version of :class:`MitoMaps`.

    Parameters
    ----------
    keys : str or sequence of str
        Keys to convert (e.g. ``"pred"`` after softmax, or ``"label"`` with
        ``source="classes"``).
    source : {"probabilities", "classes"}
        See :class:`MitoMaps`.
    allow_missing_keys : bool
        Skip keys that are not in the data instead of raising.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        source: MapSource = "probabilities",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.maps = MitoMaps(source)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each key by its ``(object, contour)`` maps."""
        d = dict(data)
        for key in present_keys(self, d):
            d[key] = self.maps(d[key])
        return d
