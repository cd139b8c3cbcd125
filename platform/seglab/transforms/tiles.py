"""Tiles of a tiling grid as MONAI transforms: all tiles, random tiles, and stitching back.

The grid is :mod:`seglab.tiling`'s: a named preset (``"no-overlap"``, ``"paper-64"``,
``"uniform-81"``) or an explicit ``tile_size`` / ``stride`` / ``padding``, planned on each
image's own (H, W). Arrays are channel-first ``(C, H, W)`` (or ``(C, ..., H, W)``: the last two
axes are tiled, the others carried along).

* :class:`TilePatches` / :class:`TilePatchesd` cut all tiles, ``(N, C, th, tw)`` in the order
  of ``plan.origins``, for inference; a ``MetaTensor`` result keeps the image's meta plus
  ``"tiling_plan"`` (JSON) and ``"tile_origins"`` (``(N, 2)``, padded frame), so
  :class:`StitchTiles` / :class:`StitchTilesd` (or :func:`seglab.tiling.stitch` with
  :func:`tiling_plan_from_meta`) put per-tile scores back.
* :class:`RandTilePatchesd` returns ``num_samples`` random tiles of the grid as a list of
  dictionaries (like MONAI's ``RandSpatialCropSamplesd``), cut at the same place from every
  key, for training on the preset's tiles from whole images.

Meta written on ``MetaTensor`` values (strings and arrays, so DataLoader batches collate):
``"tiling_plan"`` (JSON of image_shape, tile_size, stride, padding, pad_mode), and for a random
tile ``"tile_origin"`` (y, x in the padded frame), ``"tile_index"`` (position in
``plan.origins``) and ``"patch_index"`` (0..num_samples-1); its affine is shifted to the tile.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.transforms.traits import MultiSampleTrait

from seglab.errors import SeglabError
from seglab.tiling import (
    PAD_MODES,
    PadMode,
    TilingPlan,
    Weighting,
    plan_grid,
    plan_preset,
    stitch,
    tile_view,
)
from seglab.transforms._common import (
    ArrayLike,
    as_numpy,
    check_array,
    compose_affine,
    present_keys,
    same_kind,
    to_json,
)

__all__ = [
    "RandTilePatchesd",
    "StitchTiles",
    "StitchTilesd",
    "TileGrid",
    "TilePatches",
    "TilePatchesd",
    "tiling_plan_from_meta",
]

PLAN_KEY = "tiling_plan"
ORIGINS_KEY = "tile_origins"


@dataclasses.dataclass(frozen=True)
class TileGrid:
    """How to plan the tiling grid on an image: a preset name or explicit sizes.

    Parameters
    ----------
    preset : str, optional
        A name of :data:`seglab.tiling.PRESETS`; excludes ``tile_size``.
    tile_size : int or (int, int), optional
        Tile shape in pixels, when no preset is named.
    stride : int or (int, int), optional
        Step between tiles (default ``tile_size``).
    padding : int or (int, int)
        Padding on every side, pixels (not with a preset, which brings its own).
    pad_mode : {"mirror", "symmetric", "edge", "constant"}
        How padding is filled.
    """

    preset: str | None = None
    tile_size: int | tuple[int, int] | None = None
    stride: int | tuple[int, int] | None = None
    padding: int | tuple[int, int] = 0
    pad_mode: PadMode = "mirror"

    def __post_init__(self) -> None:
        if (self.preset is None) == (self.tile_size is None):
            raise SeglabError(
                "give either a tiling preset or a tile_size, got "
                f"preset={self.preset!r}, tile_size={self.tile_size!r}",
                "pass preset='uniform-81' (or another preset), or tile_size=... with "
                "stride and padding",
            )
        if self.preset is not None and (self.stride is not None or self.padding):
            raise SeglabError(
                f"preset {self.preset!r} brings its own stride and padding, but stride="
                f"{self.stride!r}, padding={self.padding!r} were also given",
                "drop stride and padding, or give tile_size, stride and padding instead",
            )
        if self.pad_mode not in PAD_MODES:
            raise SeglabError(
                f"unknown pad_mode {self.pad_mode!r}", f"use one of {', '.join(PAD_MODES)}"
            )
        self.plan((1, 1))  # validate the preset name and sizes now, not at the first image

    def plan(self, image_shape: Sequence[int]) -> TilingPlan:
        """Plan the grid on an image whose last two axes are (H, W)."""
        if self.preset is not None:
            plan = plan_preset(self.preset, tuple(image_shape))
            return dataclasses.replace(plan, pad_mode=self.pad_mode)
        assert self.tile_size is not None
        return plan_grid(
            tuple(image_shape), self.tile_size, self.stride, self.padding, self.pad_mode
        )


def _plan_record(plan: TilingPlan) -> str:
    return to_json(
        {
            "image_shape": list(plan.image_shape),
            "tile_size": list(plan.tile_size),
            "stride": list(plan.stride),
            "padding": list(plan.padding),
            "pad_mode": plan.pad_mode,
        }
    )


def tiling_plan_from_meta(meta: Mapping[str, Any] | MetaTensor) -> TilingPlan:
    """Rebuild the :class:`~seglab.tiling.TilingPlan` recorded by the tile transforms.

    Parameters
    ----------
    meta : dict or MetaTensor
        A meta dictionary (or a ``MetaTensor``) holding ``"tiling_plan"``; after DataLoader
        collation the value is a list of strings, which must all be the same plan.

    Returns
    -------
    TilingPlan
    """
    if isinstance(meta, MetaTensor):
        meta = meta.meta
    record = meta.get(PLAN_KEY) if isinstance(meta, Mapping) else None
    if isinstance(record, list | tuple):
        if not record or any(r != record[0] for r in record):
            raise SeglabError(
                f"the batch holds {len(set(record))} different tiling plans",
                "stitch each image with its own plan (batch size 1, or one image size)",
            )
        record = record[0]
    if not isinstance(record, str):
        raise SeglabError(
            f"no tiling plan in the meta data (key {PLAN_KEY!r}, got {record!r})",
            "cut the tiles with TilePatches / TilePatchesd on a MetaTensor, or pass the plan",
        )
    fields = json.loads(record)
    return TilingPlan(
        image_shape=tuple(fields["image_shape"]),
        tile_size=tuple(fields["tile_size"]),
        stride=tuple(fields["stride"]),
        padding=tuple(fields["padding"]),
        pad_mode=str(fields["pad_mode"]),
    )


def _check_image(img: Any, name: str) -> None:
    check_array(img, name, "a channel-first (C, H, W) array")
    if img.ndim < 3:
        raise SeglabError(
            f"{name} needs a channel-first array (C, H, W), got shape {tuple(img.shape)}",
            "add a channel axis first (EnsureChannelFirst)",
        )


def _common_shape(data: Mapping[Hashable, Any], keys: list[Hashable], name: str) -> tuple[int, int]:
    for key in keys:
        _check_image(data[key], name)
    shapes = {tuple(int(n) for n in data[key].shape[-2:]) for key in keys}
    if len(shapes) != 1:
        raise SeglabError(
            f"{name}: the keys {keys} have different spatial shapes {sorted(shapes)}; tiles "
            "cut from them would not line up",
            "resize or crop image and label to the same (H, W) first",
        )
    return shapes.pop()  # type: ignore[return-value]


def _all_tiles(img: ArrayLike, plan: TilingPlan) -> ArrayLike:
    view = tile_view(as_numpy(img), plan)
    tiles = view.reshape((plan.n_tiles, *view.shape[2:]))
    out = same_kind(tiles, img)
    if isinstance(out, MetaTensor):
        out.meta[PLAN_KEY] = _plan_record(plan)
        out.meta[ORIGINS_KEY] = plan.origins.astype(np.int64)
    return out


class TilePatches(Transform):
    """Cut a channel-first image into all tiles of its grid.

    Parameters
    ----------
    preset : str, optional
        Tiling preset (``"no-overlap"``, ``"paper-64"``, ``"uniform-81"``); or give
        ``tile_size``, ``stride``, ``padding``.
    tile_size, stride, padding, pad_mode
        Explicit grid; see :class:`TileGrid`.

    Notes
    -----
    Call with ``img`` of shape ``(C, H, W)`` (or ``(C, ..., H, W)``); returns
    ``(N, C, th, tw)`` of the same kind and dtype, ``N = plan.n_tiles``, in the order of
    ``plan.origins``. :meth:`plan` gives the grid for an image shape.
    """

    def __init__(
        self,
        preset: str | None = None,
        tile_size: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        pad_mode: PadMode = "mirror",
    ) -> None:
        self.grid = TileGrid(preset, tile_size, stride, padding, pad_mode)

    def plan(self, image_shape: Sequence[int]) -> TilingPlan:
        """Plan the grid on an image whose last two axes are (H, W)."""
        return self.grid.plan(image_shape)

    def __call__(self, img: ArrayLike) -> ArrayLike:
        """Return all tiles of ``img``."""
        _check_image(img, type(self).__name__)
        return _all_tiles(img, self.grid.plan(img.shape))


class TilePatchesd(MapTransform):
    """Dictionary version of :class:`TilePatches`: the same tiles from every key.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of channel-first arrays with the same (H, W), e.g. image and label.
    preset, tile_size, stride, padding, pad_mode
        The grid; see :class:`TilePatches`.
    allow_missing_keys : bool
        Skip keys that are not in the data instead of raising.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        preset: str | None = None,
        tile_size: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        pad_mode: PadMode = "mirror",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.grid = TileGrid(preset, tile_size, stride, padding, pad_mode)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each key's image by its tiles ``(N, C, th, tw)``."""
        d = dict(data)
        keys = present_keys(self, d)
        if not keys:
            return d
        plan = self.grid.plan(_common_shape(d, keys, type(self).__name__))
        for key in keys:
            d[key] = _all_tiles(d[key], plan)
        return d


class RandTilePatchesd(Randomizable, MapTransform, MultiSampleTrait):
    """Pick random tiles of the grid from every key: a list of ``num_samples`` dictionaries.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of channel-first arrays with the same (H, W), e.g. ``["image", "label"]``.
    preset : str, optional
        Tiling preset; or give ``tile_size``, ``stride``, ``padding``.
    num_samples : int
        Tiles per call (per image).
    tile_size, stride, padding, pad_mode
        Explicit grid; see :class:`TileGrid`.
    replace : bool
        Draw tiles with replacement. Without (the default), ``num_samples`` must not exceed
        the number of tiles, and ``num_samples = plan.n_tiles`` yields every tile once in a
        random order (16 for ``"no-overlap"`` on 1024 x 1024).
    allow_missing_keys : bool
        Skip keys that are not in the data instead of raising.

    Notes
    -----
    Each returned dictionary holds ``(C, th, tw)`` tiles under ``keys`` (same kind and dtype
    as the input) and deep copies of the other items. Randomness comes from ``self.R``.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        preset: str | None = None,
        num_samples: int = 1,
        tile_size: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        pad_mode: PadMode = "mirror",
        replace: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
            num_samples = -1
        if num_samples < 1:
            raise SeglabError(
                f"num_samples must be a positive integer, got {num_samples!r}",
                "pass e.g. num_samples=4",
            )
        self.grid = TileGrid(preset, tile_size, stride, padding, pad_mode)
        self.num_samples = int(num_samples)
        self.replace = bool(replace)
        self._chosen = np.zeros(0, dtype=np.int64)

    def randomize(self, data: TilingPlan) -> None:
        """Choose ``num_samples`` tile indices of the plan ``data``."""
        n = data.n_tiles
        if not self.replace and self.num_samples > n:
            raise SeglabError(
                f"cannot draw {self.num_samples} different tiles from a grid of {n} "
                f"({data.describe()})",
                f"pass num_samples <= {n}, or replace=True",
            )
        self._chosen = np.asarray(
            self.R.choice(n, size=self.num_samples, replace=self.replace), dtype=np.int64
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        """Return ``num_samples`` dictionaries, each with one tile per key."""
        d = dict(data)
        keys = present_keys(self, d)
        name = type(self).__name__
        if not keys:
            return [deepcopy(d) for _ in range(self.num_samples)]
        plan = self.grid.plan(_common_shape(d, keys, name))
        self.randomize(plan)
        others = [k for k in d if k not in keys]
        samples: list[dict[Hashable, Any]] = [
            {k: deepcopy(d[k]) for k in others} for _ in range(self.num_samples)
        ]
        origins = plan.origins
        (top, _), (left, _) = plan.pad_width
        nx = plan.grid_shape[1]
        record = _plan_record(plan)
        for key in keys:
            img = d[key]
            view = tile_view(as_numpy(img), plan)
            for i, tile_index in enumerate(self._chosen):
                iy, ix = divmod(int(tile_index), nx)
                tile = same_kind(view[iy, ix], img)
                if isinstance(tile, MetaTensor):
                    oy, ox = (int(v) for v in origins[tile_index])
                    shift = np.array([[1.0, 0.0, oy - top], [0.0, 1.0, ox - left], [0, 0, 1.0]])
                    compose_affine(tile, shift)
                    tile.meta[PLAN_KEY] = record
                    tile.meta["tile_origin"] = np.array([oy, ox], dtype=np.int64)
                    tile.meta["tile_index"] = int(tile_index)
                    tile.meta["patch_index"] = i
                samples[i][key] = tile
        return samples


class StitchTiles(Transform):
    """Put per-tile scores back at their positions and crop the padding (eq. 1 of study A).

    Parameters
    ----------
    plan : TilingPlan, optional
        The grid the tiles came from. Without it, the plan recorded in the input
        ``MetaTensor``'s meta (``"tiling_plan"``, written by :class:`TilePatches`) is used.
    weighting : {"sum", "gaussian"}
        ``"sum"`` adds the score vectors of all covering tiles; ``"gaussian"`` weights tile
        borders down first (see :func:`seglab.tiling.stitch`).
    average : bool
        Divide by the summed weights (same argmax).

    Notes
    -----
    Call with tile scores ``(N, K, th, tw)``; returns ``(K, H, W)`` float32 of the same kind.
    Take ``argmax`` over K for labels (e.g. MONAI's ``AsDiscrete(argmax=True)``).
    """

    def __init__(
        self,
        plan: TilingPlan | None = None,
        weighting: Weighting = "sum",
        average: bool = False,
    ) -> None:
        if plan is not None and not isinstance(plan, TilingPlan):
            raise SeglabError(
                f"plan must be a TilingPlan, got {type(plan).__name__}",
                "pass seglab.tiling.plan_preset(...) or leave plan=None",
            )
        if weighting not in ("sum", "gaussian"):
            raise SeglabError(f"unknown weighting {weighting!r}", "use 'sum' or 'gaussian'")
        self.plan = plan
        self.weighting = weighting
        self.average = bool(average)

    def __call__(self, tiles: ArrayLike, plan: TilingPlan | None = None) -> ArrayLike:
        """Stitch ``tiles`` (N, K, th, tw) with ``plan`` (or the stored / recorded one)."""
        check_array(tiles, type(self).__name__, "tile scores (N, K, th, tw)")
        plan = plan or self.plan or tiling_plan_from_meta(getattr(tiles, "meta", {}))
        combined = stitch(as_numpy(tiles), plan, weighting=self.weighting, average=self.average)
        out = same_kind(combined, tiles)
        if isinstance(out, MetaTensor):
            out.meta.pop(ORIGINS_KEY, None)
        return out


class StitchTilesd(MapTransform):
    """Dictionary version of :class:`StitchTiles`.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of tile scores ``(N, K, th, tw)``, e.g. ``"pred"``.
    plan_key : str, optional
        Key of a ``MetaTensor`` whose meta holds the tiling plan (e.g. ``"image"`` after
        :class:`TilePatchesd`); default: each key's own meta.
    weighting, average
        See :class:`StitchTiles`.
    allow_missing_keys : bool
        Skip keys that are not in the data instead of raising.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        plan_key: Hashable | None = None,
        weighting: Weighting = "sum",
        average: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.plan_key = plan_key
        self.stitcher = StitchTiles(weighting=weighting, average=average)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each key's tile scores by the stitched ``(K, H, W)`` scores."""
        d = dict(data)
        keys = present_keys(self, d)
        plan = None
        if self.plan_key is not None:
            if self.plan_key not in d:
                raise SeglabError(
                    f"{type(self).__name__}: plan_key {self.plan_key!r} is not in the data, "
                    f"which has keys {list(d)}",
                    "name the key whose tiles were cut by TilePatchesd",
                )
            plan = tiling_plan_from_meta(getattr(d[self.plan_key], "meta", {}))
        for key in keys:
            d[key] = self.stitcher(d[key], plan)
        return d
