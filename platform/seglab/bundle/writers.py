"""A MONAI ``ImageWriter`` that saves label maps with seglab's writer (PNG or TIFF, no transpose).

MONAI's ``PILWriter`` swaps the first two axes (MONAI's x/y convention), and it writes TIFF only
through ITK. seglab arrays are ``(Y, X)`` or ``(Z, Y, X)`` as displayed, so predictions are
written with :func:`seglab.io.images.write_image`: ``SaveImaged(keys="pred",
writer=LabelMapWriter, output_ext=".png", output_dtype="uint8", resample=False)`` for 2D maps,
``output_ext=".tif"`` for stacks (with the voxel size TiffReader recorded).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from monai.data import ImageWriter
from monai.utils import convert_to_numpy

from seglab.errors import SeglabError
from seglab.io.images import write_image

__all__ = ["LabelMapWriter"]


class LabelMapWriter(ImageWriter):
    """Write a ``(1, Z, H, W)``, ``(Z, H, W)``, ``(1, H, W)`` or ``(H, W)`` map as uint8 PNG/TIFF.

    Notes
    -----
    Values must lie in 0..255 (class indices, or probabilities scaled to 0..255); they are
    written as they are (no resampling, no axis swap), with the voxel size of the meta data's
    ``"spacing"`` (as :class:`seglab.transforms.TiffReader` records it) when it is known.
    """

    output_dtype = np.uint8

    def __init__(self, output_dtype: Any = np.uint8, **kwargs: Any) -> None:
        super().__init__(output_dtype=output_dtype, **kwargs)
        self.spacing: tuple[float, ...] | None = None

    def set_data_array(
        self,
        data_array: Any,
        channel_dim: int | None = 0,
        squeeze_end_dims: bool = True,
        **kwargs: Any,
    ) -> None:
        """Keep the map as ``(Z, H, W)`` or ``(H, W)`` (a single channel is dropped)."""
        array = np.asarray(convert_to_numpy(data_array))
        if array.ndim in (3, 4) and channel_dim is not None and array.shape[channel_dim] == 1:
            array = np.squeeze(array, axis=channel_dim)
        if array.ndim not in (2, 3):
            raise SeglabError(
                f"LabelMapWriter writes one 2D map or stack, got shape {array.shape}",
                "write one channel at a time",
            )
        if array.size and (array.min() < 0 or array.max() > 255):
            raise SeglabError(
                f"map values must be 0..255, got {array.min()}..{array.max()}",
                "write class indices or probabilities scaled to 0..255",
            )
        self.data_obj = np.rint(array).astype(np.uint8)

    def set_metadata(self, meta_dict: Any = None, resample: bool = False, **options: Any) -> None:
        """Take the voxel size (um) from the meta data when it is known."""
        spacing = None if meta_dict is None else meta_dict.get("spacing")
        self.spacing = None
        if spacing is not None:
            values = np.asarray(convert_to_numpy(spacing), dtype=np.float64).ravel()
            if values.size and np.all(np.isfinite(values)):
                self.spacing = tuple(float(v) for v in values)

    def write(self, filename: str | os.PathLike[str], verbose: bool = False, **kwargs: Any) -> None:
        """Write the map to ``filename`` (atomically, via seglab's writer)."""
        super().write(filename, verbose=verbose)
        spacing = self.spacing
        if spacing is not None and len(spacing) != self.data_obj.ndim:
            spacing = None
        write_image(filename, self.data_obj, spacing)
