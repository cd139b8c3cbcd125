"""Thin MONAI transforms (array + dictionary pairs) over the numerical core."""

from seglab.transforms.augment import D4Transform, D4Transformd, RandD4, RandD4d, d4_index_map
from seglab.transforms.discrete import AsDiscrete, AsDiscreted
from seglab.transforms.intensity import IntensityRemap, IntensityRemapd
from seglab.transforms.labels import DecodeColourLabels, DecodeColourLabelsd, resolve_colour_table
from seglab.transforms.readers import TiffReader
from seglab.transforms.slices import (
    AdjacentSlices,
    AdjacentSlicesd,
    RandAdjacentSlicesd,
    adjacent_slice_indices,
)
from seglab.transforms.targets import MitoMaps, MitoMapsd, MitoTargets, MitoTargetsd
from seglab.transforms.tiles import (
    RandTilePatchesd,
    StitchTiles,
    StitchTilesd,
    TileGrid,
    TilePatches,
    TilePatchesd,
    tiling_plan_from_meta,
)

__all__ = [
    "AdjacentSlices",
    "AsDiscrete",
    "AsDiscreted",
    "AdjacentSlicesd",
    "D4Transform",
    "D4Transformd",
    "DecodeColourLabels",
    "DecodeColourLabelsd",
    "IntensityRemap",
    "IntensityRemapd",
    "MitoMaps",
    "MitoMapsd",
    "MitoTargets",
    "MitoTargetsd",
    "RandAdjacentSlicesd",
    "RandD4",
    "RandD4d",
    "RandTilePatchesd",
    "StitchTiles",
    "StitchTilesd",
    "TiffReader",
    "TileGrid",
    "TilePatches",
    "TilePatchesd",
    "adjacent_slice_indices",
    "d4_index_map",
    "resolve_colour_table",
    "tiling_plan_from_meta",
]
