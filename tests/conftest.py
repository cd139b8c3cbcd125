"""Fixtures shared across the test folders."""

from pathlib import Path

import pytest

from seglab.io.dataset import write_manifest
from seglab.io.images import write_image
from seglab.io.labels import LUNG_CLASSES
from seglab.phantoms.lung import make_lung_phantom


def _write_lung_dataset(root: Path, seeds: range, size: int = 256) -> Path:
    """Lung phantoms ``lung_<seed>`` of ``size`` px as a dataset folder with a manifest."""
    for seed in seeds:
        phantom = make_lung_phantom(size=size, seed=seed)
        write_image(root / "images" / f"lung_{seed}.png", phantom.image)
        write_image(root / "labels" / f"lung_{seed}.png", phantom.label_rgb)
    LUNG_CLASSES.save(root / "classes.json")
    write_manifest(root)
    return root


@pytest.fixture(scope="session")
def write_lung_dataset():
    """Return ``write(root, seeds, size=256) -> root`` that writes a lung phantom dataset."""
    return _write_lung_dataset
