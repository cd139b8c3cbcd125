"""Pieces that MONAI bundle configs point at, and prediction outside a bundle.

Data lists, the tiling inferer, the label writer, per-epoch checkpoints, exact resume,
initial (pre-trained) weights, training throughput, and the choice to ``torch.compile``
(:mod:`seglab.bundle.acceleration`).

:mod:`seglab.bundle.predict` runs a trained network on an image or a stack outside a bundle
(e.g. in a registered model's wrapper) and writes probability and label maps.

Bundle configs (``bundles/<name>/configs/*.json``) refer to these by dotted path, e.g.
``"_target_": "seglab.bundle.TilingInferer"``. Nothing here runs at import time beyond imports.
"""

from seglab.bundle.acceleration import NetworkRunner, compile_training
from seglab.bundle.checkpoint import (
    BestModelState,
    EpochCheckpoint,
    EpochSeeder,
    InitialWeights,
    ResumeFromCheckpoint,
)
from seglab.bundle.data import class_weights_for, dataset_dicts
from seglab.bundle.inferer import TilingInferer
from seglab.bundle.predict import (
    predict_image,
    predict_stack,
    probability_maps,
    write_label_map,
    write_probability_maps,
)
from seglab.bundle.throughput import TrainingThroughput
from seglab.bundle.writers import LabelMapWriter

__all__ = [
    "BestModelState",
    "EpochCheckpoint",
    "EpochSeeder",
    "InitialWeights",
    "LabelMapWriter",
    "NetworkRunner",
    "ResumeFromCheckpoint",
    "TilingInferer",
    "TrainingThroughput",
    "class_weights_for",
    "compile_training",
    "dataset_dicts",
    "predict_image",
    "predict_stack",
    "probability_maps",
    "write_label_map",
    "write_probability_maps",
]
