"""A MONAI ``ImageReader`` over :func:`seglab.io.images.read_image` (tifffile, PIL, nibabel).

MONAI reads TIFF only through ITK; its ``PILReader`` transposes 2D images and cannot read
stacks. :class:`TiffReader` reads TIFF stacks (ImageJ, OME, plain), PNG and NIfTI with seglab's
reader and hands MONAI the array and a meta dictionary::

    LoadImaged(keys=["image", "label"], reader="seglab.transforms.TiffReader")
    LoadImage(reader=TiffReader(), ensure_channel_first=True)

Axis order is seglab's, not ITK's or NiBabel's: arrays come as ``(Y, X)``, ``(Y, X, C)``,
``(Z, Y, X)`` or ``(Z, Y, X, C)`` -- row-major, as the file is displayed, never transposed (a
NIfTI file is transposed from its stored (x, y, z) into (z, y, x), as seglab always does). The
meta dictionary follows that order:

=========================  ==========================================================
``spatial_shape``          ``(Y, X)`` or ``(Z, Y, X)``
``original_channel_dim``   ``"no_channel"`` for grey images and stacks, -1 for colour
                           (so ``EnsureChannelFirst`` gives ``(1, [Z,] Y, X)`` or
                           ``(C, Y, X)``)
``affine``                 ``diag(spacing..., 1)``, ``(r + 1) x (r + 1)`` for r spatial axes,
                           mapping array indices to micrometres in the same (z, y, x) order
                           (identity when the file has no pixel size); also
                           ``original_affine``. ``MetaTensor.pixdim`` is then the spacing.
``spacing``                pixel size per spatial axis in um, NaN where unknown
``spacing_unit``           ``"um"``
``axes``                   seglab's axes string, e.g. ``"ZYX"``
``format``                 ``"tiff"``, ``"ome-tiff"``, ``"png"`` or ``"nifti"``
=========================  ==========================================================

Several files in one call are stacked as channels (grey images on a new first axis, colour
images along their channel axis); they must share shape and spacing.

When ``LoadImage`` is given this reader and it fails (a missing or corrupt file), MONAI goes
on to try its own readers and finally raises a ``RuntimeError`` that includes the
:class:`~seglab.errors.DataFileError` message of this reader.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, ensure_tuple

from seglab.errors import DataFileError, SeglabError
from seglab.io.images import Image, image_format, read_image

__all__ = ["TiffReader"]


def _meta(image: Image) -> dict[str, Any]:
    spatial = image.spatial_shape
    known = image.spacing is not None
    spacing = np.asarray(image.spacing if known else [np.nan] * len(spatial), dtype=np.float64)
    affine = np.diag([*(spacing if known else np.ones(len(spatial))), 1.0])
    return {
        MetaKeys.SPATIAL_SHAPE: np.asarray(spatial, dtype=np.int64),
        MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if image.axes.endswith("C") else "no_channel",
        MetaKeys.AFFINE: affine,
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        "spacing": spacing,
        "spacing_unit": "um",
        "axes": image.axes,
        "format": image_format(image.path) if image.path is not None else "array",
        "filename_or_obj": str(image.path) if image.path is not None else "",
    }


class TiffReader(ImageReader):
    """Read TIFF (stacks, ImageJ, OME), PNG and NIfTI files for MONAI's ``LoadImage``.

    Notes
    -----
    :meth:`read` returns seglab :class:`~seglab.io.images.Image` objects; :meth:`get_data`
    returns ``(array, meta)`` as the module docstring describes. Bad files raise
    :class:`~seglab.errors.DataFileError`.
    """

    def verify_suffix(
        self, filename: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str
    ) -> bool:
        """Whether every file name has an ending seglab reads (.tif, .tiff, .png, .nii, ...)."""
        names = ensure_tuple(filename)
        if not names:
            return False
        for name in names:
            try:
                image_format(name)
            except DataFileError:
                return False
        return True

    def read(
        self, data: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str, **kwargs: Any
    ) -> Image | list[Image]:
        """Read one file (an :class:`~seglab.io.images.Image`) or several (a list)."""
        if kwargs:
            raise SeglabError(
                f"TiffReader.read takes no options, got {sorted(kwargs)}",
                "drop the extra reader arguments",
            )
        names = ensure_tuple(data)
        images = [read_image(name) for name in names]
        return images if len(names) > 1 else images[0]

    def get_data(self, img: Image | Sequence[Image]) -> tuple[np.ndarray, dict[str, Any]]:
        """Return the pixels and MONAI meta data of one image, or of several stacked."""
        images = list(ensure_tuple(img))
        if not images or not all(isinstance(i, Image) for i in images):
            raise SeglabError(
                "TiffReader.get_data takes what TiffReader.read returned",
                "call read() first and pass its result",
            )
        first = images[0]
        meta = _meta(first)
        if len(images) == 1:
            # MONAI's transforms may write in place and torch warns on read-only arrays
            array = first.array
            return (array if array.flags.writeable else array.copy()), meta
        for other in images[1:]:
            if other.shape != first.shape or other.axes != first.axes:
                raise DataFileError(
                    f"cannot stack {other.path} ({other.axes} {other.shape}) with {first.path} "
                    f"({first.axes} {first.shape}) as channels",
                    "pass files of the same shape and layout",
                )
            if other.spacing != first.spacing:
                raise DataFileError(
                    f"cannot stack {other.path} (spacing {other.spacing}) with {first.path} "
                    f"(spacing {first.spacing}) as channels",
                    "pass files with the same pixel size",
                )
        arrays = [i.array for i in images]
        if first.axes.endswith("C"):
            return np.concatenate(arrays, axis=-1), meta
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta
