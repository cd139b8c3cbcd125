"""A tiny logged lung model in a temporary MLflow store, shared by the registry tests."""

import pytest
import torch

from seglab.models.publish import log_model, register_model
from seglab.models.pyfunc import MemberSettings, ModelSettings
from seglab.networks.factory import build_network
from seglab.tracking.runs import tracked_run
from seglab.tracking.store import resolve_store

TINY = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
CLASSES = ["background", "airway", "bud", "proximal", "artery", "vein"]


def tiny_settings(preset: str = "no-overlap") -> ModelSettings:
    return ModelSettings(
        bundle="lung",
        kind="multiclass",
        class_names=CLASSES,
        in_channels=3,
        members=[MemberSettings("unet", TINY, 1)],
        tiling_preset=preset,
        tile_batch_size=4,
    )


def tiny_weights(path, seed: int = 0):
    torch.manual_seed(seed)
    network = build_network("unet", 3, len(CLASSES), {"unet": TINY})
    torch.save(network.state_dict(), path)
    return path


@pytest.fixture
def tiny():
    """The helpers above, for test modules (conftest cannot be imported by name)."""
    return type(
        "Tiny", (), {"settings": staticmethod(tiny_settings), "weights": staticmethod(tiny_weights)}
    )


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return resolve_store(tmp_path / "mlruns")


@pytest.fixture
def register(store, tmp_path):
    """Return a function that logs a tiny model on a new run and registers it as ``name``."""

    def _register(name: str = "lung-tiny", seed: int = 0):
        weights = tiny_weights(tmp_path / f"w{seed}.pt", seed)
        with tracked_run(store, "lung", "lung-tiny", params={"seed": seed}) as run:
            logged = log_model(run, tiny_settings(), [weights])
        return register_model(store, name, logged), logged

    return _register
