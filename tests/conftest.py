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


TINY_UNET = {"channels": [4, 8], "strides": [2], "num_res_units": 0}


def _register_tiny_mito_model(store, tmp_path, name="mito-tiny"):
    """Log and register an untrained 3-class mito UNet (as tests/models/conftest.py does)."""
    import torch

    from seglab.models.publish import log_model, register_model
    from seglab.models.pyfunc import MemberSettings, ModelSettings
    from seglab.networks.factory import build_network
    from seglab.tracking.runs import tracked_run

    torch.manual_seed(0)
    network = build_network("unet", 1, 3, {"unet": TINY_UNET})
    weights = tmp_path / "w.pt"
    torch.save(network.state_dict(), weights)
    settings = ModelSettings(
        bundle="mito",
        kind="binary",
        class_names=["background", "interior", "contour"],
        in_channels=1,
        members=[MemberSettings("unet", TINY_UNET, 1)],
        foreground_classes=[1, 2],
        tiling_preset="no-overlap",
        tile_batch_size=4,
    )
    with tracked_run(store, "mito", "mito-tiny") as run:
        logged = log_model(run, settings, [weights])
    return register_model(store, name, logged)


@pytest.fixture(scope="session")
def register_tiny_mito_model():
    """Return ``register(store, tmp_path, name="mito-tiny") -> ModelVersion`` (untrained)."""
    return _register_tiny_mito_model


#: The smallest demo that still trains, registers, promotes and evaluates both bundles and runs
#: the three studies (seconds per training; about a minute and a half in all on 2 cores).
TINY_DEMO_OVERRIDES = {
    "network_options#unet#channels": [4, 8],
    "network_options#unet#strides": [2],
    "network_options#unet#num_res_units": 0,
    "epochs": 1,
    "val_interval": 1,
}


def tiny_demo_training():
    """The :class:`seglab.demo.DemoTraining` of the tiny demo."""
    from seglab.demo import DemoStudies, DemoTraining

    unet = TINY_DEMO_OVERRIDES
    return DemoTraining(
        lung_size=256,
        lung_train=3,
        lung_test=1,
        sem_shape=(8, 96, 96),
        lung=unet | {"tiling_preset": "no-overlap", "num_samples": 2, "batch_size": 2},
        mito=unet | {"patch_size": 64, "iterations_per_epoch": 2, "num_slices": 1},
        studies=DemoStudies(search_trials=2, overrides={"epochs": 1, "val_interval": 1}),
    )


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """Run the tiny demo once per session; return ``(out, store, summary)``. Read-only for tests.

    ``MLFLOW_TRACKING_URI`` is cleared for the run: it would replace the store passed here and
    send the demo's runs to a user's server.
    """
    from seglab.demo import run_demo

    root = tmp_path_factory.mktemp("tiny-demo")
    store = root / "mlruns"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        summary = run_demo(root / "out", seed=0, store=store, training=tiny_demo_training())
    return root / "out", store, summary
