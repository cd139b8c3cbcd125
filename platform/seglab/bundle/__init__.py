"""Pieces that MONAI bundle configs point at: data lists, the tiling inferer, the label writer.

Bundle configs (``bundles/<name>/configs/*.json``) refer to these by dotted path, e.g.
``"_target_": "seglab.bundle.TilingInferer"``. Nothing here runs at import time beyond imports.
"""

from seglab.bundle.data import dataset_dicts
from seglab.bundle.inferer import TilingInferer
from seglab.bundle.writers import LabelMapWriter

__all__ = ["LabelMapWriter", "TilingInferer", "dataset_dicts"]
