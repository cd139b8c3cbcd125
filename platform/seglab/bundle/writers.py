"""A MONAI ``ImageWriter`` that saves label maps with seglab's writer (PNG or TIFF, no transpose).

MONAI's ``PILWriter`` swaps the first two axes (MONAI's x/y convention), and it writes TIFF only
through ITK. seglab arrays are ``(Y, X)`` as displayed, so predictions are written with
:func:`seglab.io.images.write_image`: ``SaveImaged(keys="pred", writer=LabelMapWriter,
output_ext=".png", output_dtype="uint8", resample=False)``.
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
    """Write ``(1, H, W)`` (or ``(H, W)``) class-index maps as uint8 PNG or TIFF files.

    Notes
    -----
    Values must be class indices in 0..255; they are written as they are (no scaling, no
    resampling, no axis swap). The file format follows the name (``.png``, ``.tif``).
    """

    output_dtype = np.uint8

    def __init__(self, output_dtype: Any = np.uint8, **kwargs: Any) -> None:
        super().__init__(output_dtype=output_dtype, **kwargs)

    def set_data_array(
        self,
        data_array: Any,
        channel_dim: int | None = 0,
        squeeze_end_dims: bool = True,
        **kwargs: Any,
    ) -> None:
        """Keep the label map as an ``(H, W)`` array (a single channel is dropped)."""
        array = np.asarray(convert_to_numpy(data_array))
        if array.ndim == 3 and channel_dim is not None and array.shape[channel_dim] == 1:
            array = np.squeeze(array, axis=channel_dim)
        if array.ndim != 2:
            raise SeglabError(
                f"LabelMapWriter writes one 2D label map, got shape {array.shape}",
                "take the argmax over classes first (AsDiscreted(argmax=True))",
            )
        if array.size and (array.min() < 0 or array.max() > 255):
            raise SeglabError(
                f"label values must be 0..255, got {array.min()}..{array.max()}",
                "write class indices, not scores",
            )
        self.data_obj = array.astype(np.uint8)

    def set_metadata(self, meta_dict: Any = None, resample: bool = False, **options: Any) -> None:
        """Ignore the meta data: the map is written on its own pixel grid."""

    def write(self, filename: str | os.PathLike[str], verbose: bool = False, **kwargs: Any) -> None:
        """Write the label map to ``filename`` (atomically, via seglab's writer)."""
        super().write(filename, verbose=verbose)
        write_image(filename, self.data_obj)
