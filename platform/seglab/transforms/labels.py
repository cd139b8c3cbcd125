"""Colour-coded label images to class-index maps, as a MONAI transform pair.

Study A's ground truth is an RGB image with one colour per class. After ``LoadImage`` and
``EnsureChannelFirst`` it is ``(3, H, W)`` (or ``(4, H, W)`` with alpha, which is ignored);
:class:`DecodeColourLabels` turns it into ``(1, H, W)`` class indices with
:meth:`seglab.io.labels.ColourTable.decode`. Pixels of a colour not in the table raise the core's
:class:`~seglab.errors.DataFileError`, which lists the colours and their counts.

One-hot targets come from MONAI: ``AsDiscreted(keys="label", to_onehot=6)``.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import MapTransform, Transform

from seglab.errors import SeglabError
from seglab.io.labels import LUNG_CLASSES, ColourTable
from seglab.transforms._common import ArrayLike, as_numpy, check_array, present_keys, same_kind

__all__ = ["DecodeColourLabels", "DecodeColourLabelsd", "resolve_colour_table"]

#: Colour tables known by name.
NAMED_TABLES: dict[str, ColourTable] = {"lung": LUNG_CLASSES}


def resolve_colour_table(table: ColourTable | str | os.PathLike[str]) -> ColourTable:
    """Return a colour table given as an object, a name (``"lung"``) or a ``classes.json`` path.

    Raises
    ------
    DataFileError
        When a path does not exist or is not a valid table.
    """
    if isinstance(table, ColourTable):
        return table
    if isinstance(table, str) and table in NAMED_TABLES:
        return NAMED_TABLES[table]
    if isinstance(table, str | os.PathLike):
        return ColourTable.load(table)
    raise SeglabError(
        f"table must be a ColourTable, a name ({', '.join(NAMED_TABLES)}) or a path to a "
        f"classes.json, got {type(table).__name__}",
        "pass table='lung' or the path of the dataset's classes.json",
    )


class DecodeColourLabels(Transform):
    """Decode a colour-coded label image into a class-index map.

    Parameters
    ----------
    table : ColourTable, str or path
        The class colours: a :class:`~seglab.io.labels.ColourTable`, ``"lung"`` (study A's
        six classes, :data:`seglab.io.labels.LUNG_CLASSES`) or the path of a ``classes.json``.
    channel_dim : {0, -1}
        Where the colour channels are: 0 for channel-first ``(3, H, W)`` (MONAI's layout after
        ``EnsureChannelFirst``), -1 for channel-last ``(H, W, 3)``.
    tolerance : float
        Largest RGB distance to the nearest table colour that still counts as that colour
        (0: exact colours only; a few units for JPEG-damaged annotations).
    dtype : numpy dtype
        Output dtype (class indices are 0..255).

    Notes
    -----
    Call with ``(3 | 4, H, W)`` (or ``(H, W, 3 | 4)`` with ``channel_dim=-1``), numpy or torch,
    any integer-valued dtype; returns ``(1, H, W)`` class indices of the same kind.
    """

    def __init__(
        self,
        table: ColourTable | str | os.PathLike[str] = "lung",
        channel_dim: int = 0,
        tolerance: float = 0.0,
        dtype: Any = np.uint8,
    ) -> None:
        if channel_dim not in (0, -1):
            raise SeglabError(
                f"channel_dim must be 0 (channel-first) or -1 (channel-last), got {channel_dim!r}",
                "pass channel_dim=0 after EnsureChannelFirst",
            )
        self.table = resolve_colour_table(table)
        self.channel_dim = channel_dim
        self.tolerance = float(tolerance)
        self.dtype = np.dtype(dtype)

    def __call__(self, img: ArrayLike) -> ArrayLike:
        """Return the class indices ``(1, H, W)`` of ``img``."""
        name = type(self).__name__
        layout = "(3, H, W)" if self.channel_dim == 0 else "(H, W, 3)"
        check_array(img, name, f"a colour-coded label image {layout}")
        if img.ndim < 3 or img.shape[self.channel_dim] not in (3, 4):
            where = "first" if self.channel_dim == 0 else "last"
            raise SeglabError(
                f"{name} needs a colour-coded label image {layout} with 3 (RGB) or 4 (RGBA) "
                f"channels {where}, got shape {tuple(img.shape)}",
                "pass the RGB annotation (not an index map), or set channel_dim to where the "
                "colours are",
            )
        rgb = as_numpy(img)
        if self.channel_dim == 0:
            rgb = np.moveaxis(rgb, 0, -1)
        indices = self.table.decode(rgb, tolerance=self.tolerance)
        return same_kind(indices[np.newaxis].astype(self.dtype, copy=False), img)


class DecodeColourLabelsd(MapTransform):
    """Dictionary version of :class:`DecodeColourLabels`.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of colour-coded label images, e.g. ``"label"``.
    table, channel_dim, tolerance, dtype
        See :class:`DecodeColourLabels`.
    allow_missing_keys : bool
        Skip keys that are not in the data instead of raising.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        table: ColourTable | str | os.PathLike[str] = "lung",
        channel_dim: int = 0,
        tolerance: float = 0.0,
        dtype: Any = np.uint8,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.decoder = DecodeColourLabels(table, channel_dim, tolerance, dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Decode each key's colour image."""
        d = dict(data)
        for key in present_keys(self, d):
            d[key] = self.decoder(d[key])
        return d
