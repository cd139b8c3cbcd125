"""Tiling study (study A's Table 2): children, table, nesting, resuming after an interruption."""

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from seglab.errors import SeglabError
from seglab.studies.recipes import load_recipe, parse_recipe
from seglab.studies.run import run_recipe
from seglab.studies.runner import TAG_CHILD_KEY, TAG_PARENT
from seglab.studies.tiling import seam_band, seam_errors, tiling_children
from seglab.tracking.store import resolve_store
from seglab.workflows.phantoms import write_lung_phantoms

TINY = {
    "network_options#unet#channels": [4, 8],
    "network_options#unet#strides": [2],
    "network_options#unet#num_res_units": 0,
    "epochs": 1,
    "batch_size": 2,
    "num_samples": 2,
    "val_fraction": 0.5,
    "show_progress": False,
}


@pytest.fixture(autouse=True)
def no_team_server(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """Two 512 px training phantoms (one is the validation split) and one test phantom."""
    root = tmp_path_factory.mktemp("lung")
    write_lung_phantoms(root / "train", count=2, size=512, seed=0)
    write_lung_phantoms(root / "test", count=1, size=512, seed=100)
    return root / "train", root / "test"


def recipe_document(data, name, **extra) -> dict:
    train, test = data
    document = {
        "kind": "tiling",
        "name": name,
        "bundle": "lung",
        "data": str(train),
        "eval_data": str(test),
        "grid": {"tiling_preset": ["no-overlap", "uniform-81"]},
        "overrides": dict(TINY),
    }
    return document | extra


def write_recipe(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def child_runs(store, parent_id):
    client = store.client()
    experiment = client.get_experiment_by_name("studies")
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_id}'"
    )


# -- pure parts -----------------------------------------------------------------------------------
def test_children_are_the_grid_times_arms_times_repeats():
    recipe = parse_recipe(
        {
            "kind": "tiling", "name": "t", "bundle": "lung", "data": "d", "seed": 5, "repeats": 2,
            "grid": {"network_name": ["unet", "segnet"], "tiling_preset": ["no-overlap"]},
            "arms": {"plain": {}, "weighted": {"class_balance": "inverse-frequency"}},
        }
    )  # fmt: skip
    children = tiling_children(recipe)
    assert len(children) == 2 * 1 * 2 * 2
    keys = [c.key for c in children]
    assert len(set(keys)) == len(keys)
    assert keys[3] == "network_name=unet tiling_preset=no-overlap arm=weighted repeat=1"
    assert children[3].overrides == {
        "network_name": "unet",
        "tiling_preset": "no-overlap",
        "class_balance": "inverse-frequency",
        "seed": 6,
    }
    assert children[0].overrides["seed"] == 5 and "class_balance" not in children[0].overrides
    assert children[3].labels == {
        "network_name": "unet", "tiling_preset": "no-overlap", "arm": "weighted", "repeat": 1
    }  # fmt: skip


def test_seam_band_and_errors_by_hand():
    band = seam_band((600, 300), tile_size=256, width=2)
    # rows 254..257 and 510..513, columns 254..257
    assert band[:, 0].sum() == 8 and band[0, :].sum() == 4
    assert band[255, 10] and band[512, 10] and band[10, 256] and not band[10, 10]
    truth = np.zeros((600, 300), dtype=np.uint8)
    prediction = truth.copy()
    prediction[255, :] = 1  # 300 wrong pixels, all in the band
    prediction[100, 100] = 1  # one wrong pixel elsewhere
    counts = seam_errors(prediction, truth, tile_size=256, width=2)
    assert counts.seam_pixels == int(band.sum()) and counts.seam_wrong == 300
    assert counts.other_pixels == 600 * 300 - int(band.sum()) and counts.other_wrong == 1
    assert counts.seam_rate == pytest.approx(300 / band.sum())


def test_one_tile_or_empty_image_has_no_seam_band():
    assert not seam_band((256, 256)).any()
    counts = seam_errors(np.zeros((0, 0), int), np.zeros((0, 0), int))
    assert counts.seam_pixels == counts.other_pixels == 0
    assert math.isnan(counts.seam_rate) and math.isnan(counts.other_rate)
    with pytest.raises(SeglabError, match="equal 2D shapes"):
        seam_errors(np.zeros((4, 4)), np.zeros((4, 5)))


def test_unknown_config_id_fails_before_any_run(tmp_path, data):
    recipe = write_recipe(
        tmp_path / "bad.yaml",
        recipe_document(data, "bad", arms={"weighted": {"class_balanse": "inverse-frequency"}}),
    )
    store = resolve_store(tmp_path / "mlruns")
    with pytest.raises(SeglabError, match="class_balanse") as caught:
        run_recipe(store, load_recipe(recipe), echo=lambda line: None)
    assert "\n" not in str(caught.value)
    assert store.client().get_experiment_by_name("studies") is None


# -- a study in this process: table, nesting, re-run --------------------------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("study")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    recipe = load_recipe(
        write_recipe(
            root / "tiling.yaml", recipe_document(data, "tiny", repeats=2, register="tiling-tiny")
        )
    )
    store = resolve_store(root / "mlruns")
    lines: list[str] = []
    start = time.perf_counter()
    result = run_recipe(
        store, recipe, out_dir=root / "report", echo=lines.append, root=root / "studies"
    )
    return {
        "recipe": recipe, "store": store, "result": result, "root": root, "lines": lines,
        "seconds": time.perf_counter() - start,
    }  # fmt: skip


def test_children_finish_nested_under_the_parent(study):
    result, store = study["result"], study["store"]
    assert result.failed == 0 and result.skipped == 0 and result.children == 4
    client = store.client()
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    runs = child_runs(store, result.run_id)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    keys = {r.data.tags[TAG_CHILD_KEY] for r in runs}
    assert keys == {
        f"tiling_preset={p} repeat={r}" for p in ("no-overlap", "uniform-81") for r in (0, 1)
    }
    for run in runs:
        metrics = run.data.metrics
        assert {"final_total_dice", "train_total_dice", "train_mean_dice"} <= set(metrics)
        assert {"seam_error_rate", "interior_error_rate", "train_dice_C1"} <= set(metrics)
        assert run.data.params["seed"] in ("0", "1")
    best = [r for r in runs if r.data.tags.get("seglab.best_child") == "true"]
    assert len(best) == 1 and parent.data.tags["seglab.best_child"] == best[0].info.run_id
    assert best[0].data.metrics["final_total_dice"] == max(
        r.data.metrics["final_total_dice"] for r in runs
    )
    assert best[0].data.tags["seglab.registered"] == "tiling-tiny/1"
    assert "total_dice/no-overlap" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "report")}
    assert {
        "report/table2.csv", "report/table2.md", "report/seams.png", "report/total_dice.png"
    } <= artifacts  # fmt: skip


def test_table_values_are_the_child_runs_metrics(study):
    store, result = study["store"], study["result"]
    runs = child_runs(store, result.run_id)
    with (study["root"] / "report" / "table2.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["tiling_preset"] for r in rows] == ["no-overlap", "uniform-81"]
    for row in rows:
        mine = [r for r in runs if f"tiling_preset={row['tiling_preset']} " in
                r.data.tags[TAG_CHILD_KEY]]  # fmt: skip
        assert len(mine) == 2 and row["n"] == "2"
        for column, metric in (
            ("total", "final_total_dice"), ("C3", "final_dice_C3"),
            ("train_total", "train_total_dice"), ("seam_error", "seam_error_rate"),
        ):  # fmt: skip
            values = np.array([100 * r.data.metrics[metric] for r in mine])
            low, high = stats.t.interval(0.95, 1, loc=values.mean(), scale=stats.sem(values))
            assert float(row[column]) == pytest.approx(values.mean(), abs=1e-3)
            assert float(row[f"{column}_ci95"]) == pytest.approx((high - low) / 2, abs=1e-3)
    markdown = (study["root"] / "report" / "table2.md").read_text()
    assert "| model (tiling) | C1 |" in markdown and "| U-Net" not in markdown
    assert "| model (no-overlap) |" in markdown and " ± " in markdown


def test_rerun_skips_every_child_and_creates_no_run(study):
    store, recipe, first = study["store"], study["recipe"], study["result"]
    before = {r.info.run_id for r in child_runs(store, first.run_id)}
    lines: list[str] = []
    again = run_recipe(
        store, recipe, out_dir=study["root"] / "report", echo=lines.append,
        root=study["root"] / "studies",
    )  # fmt: skip
    assert again.run_id == first.run_id
    assert again.skipped == 4 and again.failed == 0
    assert {r.info.run_id for r in child_runs(store, first.run_id)} == before
    assert sum("skipped" in line for line in lines) == 4
    assert not any("completing its analysis" in line for line in lines)
    assert store.client().get_run(first.run_id).info.status == "FINISHED"
    versions = store.client().search_model_versions("name = 'tiling-tiny'")
    assert len(versions) == 1  # registered once, not again on the re-run


# -- an interrupted study -----------------------------------------------------------------------
def test_an_interrupted_study_finishes_without_repeating_children(tmp_path, data):
    recipe_path = write_recipe(tmp_path / "tiling.yaml", recipe_document(data, "killed"))
    store_dir = tmp_path / "mlruns"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["OMP_NUM_THREADS"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "seglab.cli.app", "run", str(recipe_path), "--store",
         str(store_dir)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    store = resolve_store(store_dir)
    first_key = "tiling_preset=no-overlap repeat=0"
    try:
        deadline = time.monotonic() + 120
        finished = []
        while not finished and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
            experiment = store.client().get_experiment_by_name("studies")
            if experiment is not None:
                finished = store.client().search_runs(
                    [experiment.experiment_id],
                    filter_string=f"tags.`{TAG_CHILD_KEY}` = '{first_key}' "
                    "and attributes.status = 'FINISHED'",
                )
        assert finished, "the first child did not finish in time"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    result = run_recipe(store, load_recipe(recipe_path), echo=lambda line: None,
                        root=tmp_path / "studies" / "again")  # fmt: skip
    assert result.failed == 0 and result.children == 2 and result.skipped >= 1
    assert result.run_id == finished[0].data.tags[TAG_PARENT]  # the same study, resumed
    runs = child_runs(store, result.run_id)
    done = [r for r in runs if r.info.status == "FINISHED"]
    assert [r.info.run_id for r in done if r.data.tags[TAG_CHILD_KEY] == first_key] == [
        finished[0].info.run_id
    ]
    assert {r.data.tags[TAG_CHILD_KEY] for r in done} == {
        first_key,
        "tiling_preset=uniform-81 repeat=0",
    }
    assert all("train_total_dice" in r.data.metrics for r in done)
    assert store.client().get_run(result.run_id).info.status == "FINISHED"
