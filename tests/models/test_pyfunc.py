"""The pyfunc wrapper: logged on a run, loaded back through MLflow, predicting probabilities."""

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest
import torch

from seglab.errors import SeglabError
from seglab.models.publish import save_model_folder
from seglab.models.pyfunc import ModelSettings, load_bundle_model, load_downloaded_model
from seglab.models.registry import load_model, model_id_of


def test_a_registered_model_loads_through_mlflow_and_returns_probabilities(store, register):
    version, logged = register()
    model, resolved = load_model(store, "models:/lung-tiny/1")
    assert resolved.version == version.version
    assert model_id_of(resolved) == logged.model_id
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 96, 80)).astype(np.float32)
    probs = model.predict(None, images)
    assert probs.shape == (2, 6, 96, 80) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_the_logged_model_is_an_output_of_its_run_with_a_dynamic_signature(store, register):
    version, logged = register()
    client = store.client()
    run = client.get_run(version.run_id)
    assert [m.model_id for m in run.outputs.model_outputs] == [logged.model_id]
    assert run.data.tags["seglab.model_id"] == logged.model_id
    model = client.get_logged_model(logged.model_id)
    assert str(model.status).endswith("READY")
    folder = store.local_dir / "dl"
    folder.mkdir()
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository(logged.artifact_location).download_artifacts("", str(folder))
    meta = mlflow.models.Model.load(str(folder))
    inputs = json.loads(meta.signature.inputs.to_json())
    assert inputs[0]["tensor-spec"]["shape"] == [-1, 3, -1, -1]
    assert (folder / "artifacts" / "bundle" / "settings.json").is_file()


def test_predict_matches_the_network_run_by_hand_on_one_tile(tmp_path, tiny):
    weights = tiny.weights(tmp_path / "w.pt", seed=3)
    folder = save_model_folder(tmp_path / "model", tiny.settings("no-overlap"), [weights])
    model = load_bundle_model(folder / "artifacts" / "bundle")
    image = np.random.default_rng(1).integers(0, 256, (3, 256, 256)).astype(np.float32)
    probs = model.probabilities(image)
    network = model.networks[0]
    with torch.inference_mode():
        expected = torch.softmax(network(torch.from_numpy(image[None] / 255.0)), 1)[0].numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_flip_tta_changes_nothing_for_an_equivariant_input(tmp_path, tiny):
    weights = tiny.weights(tmp_path / "w.pt")
    folder = save_model_folder(tmp_path / "model", tiny.settings(), [weights])
    model = load_bundle_model(folder / "artifacts" / "bundle")
    image = np.full((3, 256, 256), 90.0, dtype=np.float32)
    plain = model.probabilities(image)
    flipped = model.probabilities(image, tta="flips")
    assert plain.shape == flipped.shape == (6, 256, 256)
    assert np.isfinite(flipped).all()
    np.testing.assert_allclose(flipped.sum(0), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "ternary"}, "unknown model kind"),
        ({"class_names": ["only"]}, "at least 2 classes"),
        ({"members": []}, "at least one network"),
        ({"intensity_range": [5, 5]}, "increasing"),
        ({"intensity_remap": True}, "reference_peaks"),
    ],
)
def test_malformed_settings_are_one_line_errors(change, message, tiny):
    data = json.loads(tiny.settings().to_json()) | change
    with pytest.raises(SeglabError, match=message):
        ModelSettings.from_dict(data)


def test_wrong_input_channels_are_refused(tmp_path, tiny):
    folder = save_model_folder(
        tmp_path / "model", tiny.settings(), [tiny.weights(tmp_path / "w.pt")]
    )
    model = load_bundle_model(folder / "artifacts" / "bundle")
    with pytest.raises(SeglabError, match="takes 3 channel"):
        model.predict(None, np.zeros((1, 1, 64, 64), np.float32))
    with pytest.raises(SeglabError, match="NaN"):
        model.probabilities(np.full((3, 64, 64), np.nan, np.float32))


def test_corrupt_weights_are_a_clear_error(tmp_path, tiny):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    folder = save_model_folder(tmp_path / "model", tiny.settings(), [bad])
    with pytest.raises(SeglabError, match="cannot load model weights"):
        load_bundle_model(folder / "artifacts" / "bundle")


def test_object_probability_never_passes_one(tiny):
    from seglab.models.pyfunc import BundleRunner

    runner = BundleRunner()
    runner.settings = ModelSettings.from_dict(
        json.loads(tiny.settings().to_json()) | {"kind": "binary", "foreground_classes": [1, 2]}
    )
    probabilities = np.zeros((6, 2, 2), np.float32)
    probabilities[1], probabilities[2] = 0.6000001, 0.4000001  # sums past 1 in float32
    assert np.float32(0.6000001) + np.float32(0.4000001) > 1.0
    objects = runner.object_probability(probabilities)
    assert objects.max() <= 1.0 and objects.min() >= 0.0


def test_loading_a_registered_model_runs_none_of_its_stored_code(store, register, tmp_path):
    version, _ = register()
    marker = tmp_path / "ran"
    # someone with write access to the artifact store replaces the stored model code
    root = store.client().get_logged_model(model_id_of(version)).artifact_location
    code = Path(root.removeprefix("file://")) / "model_code.py"
    assert code.is_file()
    code.write_text(f"open({str(marker)!r}, 'w').write('pwned')\n" + code.read_text())
    model, _ = load_model(store, "models:/lung-tiny/1")
    assert not marker.exists()
    images = np.zeros((1, 3, 64, 64), np.float32)
    assert model.predict(None, images).shape == (1, 6, 64, 64)
    mlflow.pyfunc.load_model(str(code.parent))  # MLflow's own loader does run it
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize(
    ("mlmodel", "message"),
    [
        (None, "has no MLmodel file"),
        ("flavors: [unclosed", "is not valid YAML"),
        ("flavors:\n  python_function: {}\n", "is not a seglab model"),
        (
            "flavors:\n  python_function:\n    artifacts:\n      bundle: {path: ../../etc}\n",
            "points its bundle outside the model",
        ),
    ],
    ids=["missing", "not-yaml", "no-bundle", "escaping-path"],
)
def test_a_damaged_model_folder_is_a_one_line_error(tmp_path, mlmodel, message):
    if mlmodel is not None:
        (tmp_path / "MLmodel").write_text(mlmodel)
    with pytest.raises(SeglabError, match=message):
        load_downloaded_model(tmp_path)
