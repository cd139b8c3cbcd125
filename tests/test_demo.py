import csv

import numpy as np
import pytest

from seglab.demo import LinearDiscriminant, run_demo, tile_features
from seglab.errors import OutputExistsError
from seglab.io.dataset import scan_dataset, verify_manifest
from seglab.io.images import read_image
from seglab.io.labels import LUNG_CLASSES
from seglab.tiling import extract_tiles, plan_preset


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    summary = run_demo(out, seed=0)
    return out, summary


def test_demo_writes_every_output_it_reports(demo_out):
    out, summary = demo_out
    for path in summary.outputs.values():
        assert path.exists(), path
    assert "outputs in" in summary.report()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_demo_lung_dataset_is_valid_and_at_the_study_size(demo_out):
    out, _ = demo_out
    dataset = scan_dataset(out / "lung")
    assert len(dataset) == 3 and verify_manifest(out / "lung").ok
    sample = dataset.load("lung_002")
    assert sample.image.shape == (1024, 1024, 3)
    assert dataset.colour_table == LUNG_CLASSES


def test_demo_tiling_table_matches_the_presets(demo_out):
    rows = {r["preset"]: r for r in read_csv(demo_out[0] / "tiling.csv")}
    assert {k: int(r["tiles"]) for k, r in rows.items()} == {
        "no-overlap": 16,
        "paper-64": 64,
        "uniform-81": 81,
    }
    assert rows["uniform-81"]["uniform"] == "True" and rows["paper-64"]["uniform"] == "False"


def test_demo_dice_table_is_consistent_and_recomputable(demo_out):
    from sklearn.metrics import accuracy_score, f1_score

    out, _ = demo_out
    rows = read_csv(out / "lung_dice.csv")
    assert [r["preset"] for r in rows] == ["no-overlap", "paper-64", "uniform-81"]
    truth = LUNG_CLASSES.decode(read_image(out / "lung" / "labels" / "lung_002.png").array)
    for r in rows:
        per_class = [float(r[f"C{c}"]) for c in range(1, 7)]
        assert float(r["class_mean"]) == pytest.approx(np.nanmean(per_class))
        assert 0.5 < float(r["total_dice"]) <= 1.0
        png = out / "lung_predictions" / f"{r['preset']}.png"
        predicted = LUNG_CLASSES.decode(read_image(png).array)
        # independent reference: total Dice of one-hot maps = accuracy; D_c = per-class F1
        assert float(r["total_dice"]) == pytest.approx(
            accuracy_score(truth.ravel(), predicted.ravel())
        )
        np.testing.assert_allclose(
            per_class, f1_score(truth.ravel(), predicted.ravel(), average=None, labels=range(6))
        )


def test_demo_remap_improves_cell_b_and_reports_every_slice(demo_out):
    out, _ = demo_out
    rows = {r["data"]: r for r in read_csv(out / "sem_threshold.csv")}
    assert float(rows["cell B, remapped"]["f"]) > float(rows["cell B, raw"]["f"])
    peaks = read_csv(out / "sem_peaks.csv")
    assert {r["cell"] for r in peaks} == {"A", "B"}
    assert (
        len([r for r in peaks if r["cell"] == "B"])
        == read_image(out / "sem" / "cellB_remapped.tif").array.shape[0]
    )


def test_demo_refuses_an_existing_folder_without_overwrite(demo_out):
    out, _ = demo_out
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_demo(out)


def test_linear_discriminant_separates_two_gaussian_classes():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (500, 2)), rng.normal(4, 1, (500, 2))])
    y = np.repeat([0, 1], 500)
    model = LinearDiscriminant.fit(x, y, 2)
    scores = model.scores(x.T[None, :, :, None])  # (1, F, n, 1)
    assert (scores[0].argmax(0)[:, 0] == y).mean() > 0.97
    np.testing.assert_allclose(scores.sum(1), 1, rtol=1e-5)


def test_tile_features_depend_only_on_the_tile():
    image = np.random.default_rng(1).integers(0, 255, (3, 512, 512)).astype(np.uint8)
    plan = plan_preset("no-overlap", image.shape)
    tiles = extract_tiles(image, plan)
    full = tile_features(tiles)
    np.testing.assert_allclose(tile_features(tiles[:1]), full[:1], rtol=1e-5, atol=1e-5)


def test_demo_training_registers_promotes_and_evaluates_the_champions(tiny_demo, monkeypatch):
    from seglab.models.registry import audit_trail, resolve_version
    from seglab.tracking.store import resolve_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out, store, summary = tiny_demo
    for path in summary.outputs.values():
        assert path.exists(), path
    text = summary.report()
    assert "registered lung-demo/1" in text and "registered mito-demo/1" in text
    assert "models:/lung-demo@champion on 1 test phantoms: total Dice" in text
    assert "models:/mito-demo@champion on a cell-B stack: F" in text
    tracking = resolve_store(store)
    for name in ("lung-demo", "mito-demo"):
        assert str(resolve_version(tracking, f"models:/{name}@champion").version) == "1"
        assert [e.action for e in audit_trail(tracking, name)] == ["promote"]
    client = tracking.client()
    studies = client.get_experiment_by_name("studies").experiment_id
    parents = client.search_runs([studies], filter_string="tags.`seglab.study_kind` != ''")
    assert sorted(r.data.tags["seglab.study"] for r in parents) == [
        "ablation-demo",
        "search-demo",
        "tiling-demo",
    ]
    assert {r.info.status for r in parents} == {"FINISHED"}
    for name, report in (("tiling-demo", "table2.md"), ("ablation-demo", "table2.md")):
        assert (out / "studies" / name / report).is_file()
    assert (out / "studies" / "search-demo" / "trials.csv").is_file()
    assert "study tiling-demo (tiling): 4 child runs" in text
    assert "study search-demo (search): 2 child runs" in text
    evaluations = client.search_runs([client.get_experiment_by_name("evaluations").experiment_id])
    assert sorted(r.data.tags["seglab.model"] for r in evaluations) == [
        "lung-demo/1",
        "mito-demo/1",
    ]
