"""Study B's label-budget ablation: nested seeded sets, child runs, table, transfer learning."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from seglab.bundle import InitialWeights
from seglab.errors import SeglabError
from seglab.io.dataset import scan_dataset
from seglab.io.images import read_image
from seglab.networks.factory import build_network
from seglab.studies.ablation import (
    TABLE_METRICS,
    LabelSet,
    SliceSource,
    draw_sets,
    label_sets,
    prepare_data,
    run_ablation,
    summarise,
    write_label_sets,
)
from seglab.studies.recipes import parse_recipe
from seglab.studies.runner import TAG_CHILD_KEY, Child, ChildResult
from seglab.tracking.store import resolve_store
from seglab.workflows.phantoms import write_sem_phantom

TINY_UNET = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
# one tiny 1-slice epoch per child; evaluation with 256 px tiles on 64 px slices (padded)
FAST = {
    "num_slices": 1,
    "network_options#unet#channels": TINY_UNET["channels"],
    "network_options#unet#strides": TINY_UNET["strides"],
    "network_options#unet#num_res_units": TINY_UNET["num_res_units"],
    "patch_size": 64,
    "epochs": 1,
    "iterations_per_epoch": 2,
    "batch_size": 2,
    "num_samples": 2,
    "val_fraction": 0.25,
    "show_progress": False,
}


# ----------------------------------------------------------------------------- pure: the draws
@pytest.mark.parametrize("repeat", [0, 1, 2])
def test_added_sets_are_nested_within_a_repeat(repeat):
    draw = draw_sets(20, 12, base_sets=10, max_added=12, val_fraction=0.2, seed=3, repeat=repeat)
    ks = [0, 4, 8, 12]
    for small, large in zip(ks, ks[1:], strict=False):
        assert set(draw.added(small)) < set(draw.added(large))
    assert len(draw.added(8)) == 8 and draw.added(0) == ()
    assert sorted(draw.added_order) == list(range(12))  # a permutation of every slice


def test_draws_are_seeded_and_repeats_differ():
    args = {"base_sets": 8, "max_added": 10, "val_fraction": 0.2, "seed": 5}
    first = draw_sets(20, 10, repeat=0, **args)
    assert first == draw_sets(20, 10, repeat=0, **args)
    second = draw_sets(20, 10, repeat=1, **args)
    assert first.added(5) != second.added(5)
    assert first.base != second.base
    # validation: fixed by the study's seed, the same in every repeat, never a base set
    assert first.validation == second.validation and len(first.validation) == 4
    for draw in (first, second):
        assert not set(draw.validation) & set(draw.base)
        assert len(draw.base) == 8


def test_all_base_slices_are_used_without_validation():
    draw = draw_sets(5, 0, base_sets=5, max_added=0, val_fraction=0.0, seed=0, repeat=0)
    assert draw.base == (0, 1, 2, 3, 4) and draw.validation == () and draw.added(0) == ()


@pytest.mark.parametrize(
    ("n_base", "n_added", "base_sets", "max_added", "val_fraction", "match"),
    [
        (10, 5, 9, 5, 0.2, "fewer than 9 base sets plus 2 validation"),
        (10, 5, 5, 6, 0.2, "fewer than k = 6"),
        (10, 5, 5, 5, 1.0, "val_fraction must be in"),
        (0, 0, 1, 0, 0.0, "has 0 labelled slices"),
    ],
)
def test_draw_sets_refuses_impossible_budgets(
    n_base, n_added, base_sets, max_added, val_fraction, match
):
    with pytest.raises(SeglabError, match=match):
        draw_sets(
            n_base,
            n_added,
            base_sets=base_sets,
            max_added=max_added,
            val_fraction=val_fraction,
            seed=0,
            repeat=0,
        )


def test_summarise_mean_and_t_interval():
    values = {0: [0.5, 0.6, 0.7], 5: [0.8, 0.9, 0.85]}
    results = [
        ChildResult(
            Child(f"k={k} repeat={r}", {}, Path("."), {"k": k, "sets": 10 + k, "arm": "a"}),
            f"run{k}{r}",
            {"final_f_score": f, "final_precision": f, "final_recall": 1.0, "final_threshold": 100},
            {},
        )
        for k, fs in values.items()
        for r, f in enumerate(fs)
    ]
    rows = summarise(results)
    assert [(r["k"], r["sets"], r["repeats"]) for r in rows] == [(0, 10, 3), (5, 15, 3)]
    for row in rows:
        data = values[row["k"]]
        low, high = stats.t.interval(0.95, len(data) - 1, loc=np.mean(data), scale=stats.sem(data))
        assert row["F"] == pytest.approx(np.mean(data))
        assert row["F_ci"] == pytest.approx((high - low) / 2)
        assert row["recall"] == 1.0 and row["recall_ci"] == 0.0
    assert summarise([]) == []
    one = summarise(results[:1])[0]
    assert one["F"] == 0.5 and math.isnan(one["F_ci"])


# ------------------------------------------------------------------------- phantoms and files
@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """Cell A (base, 8 slices), cell B (added, 8 slices) and held-out cell B (4 slices)."""
    root = tmp_path_factory.mktemp("cells")
    write_sem_phantom(root / "cellA", shape=(8, 64, 64), cell="A", seed=0)
    write_sem_phantom(root / "cellB", shape=(8, 64, 64), cell="B", seed=1)
    write_sem_phantom(root / "cellB-test", shape=(4, 64, 64), cell="B", seed=2)
    return root


def test_write_label_sets_holds_exactly_the_chosen_slices(cells, tmp_path):
    sets = label_sets(cells / "cellA")
    assert sets == [LabelSet("cellA", z) for z in range(8)]
    source = SliceSource(cells / "cellA")
    chosen = [sets[5], sets[1], sets[3]]
    out = write_label_sets(tmp_path / "d", [("base", source, chosen)])
    names = ["base-cellA-z0001", "base-cellA-z0003", "base-cellA-z0005"]
    assert scan_dataset(out).names == names
    for folder in ("images", "labels", "contours"):
        original = read_image(cells / "cellA" / folder / "cellA.tif").array
        for name, z in zip(names, [1, 3, 5], strict=True):
            written = read_image(out / folder / f"{name}.tif").array
            np.testing.assert_array_equal(written, original[[z, z]])
    first = out / "images" / f"{names[0]}.tif"
    stamp = first.stat().st_mtime_ns
    write_label_sets(tmp_path / "d", [("base", source, chosen)])  # unchanged: kept
    assert first.stat().st_mtime_ns == stamp
    write_label_sets(tmp_path / "d", [("base", source, chosen[:2])])  # changed: rewritten
    assert scan_dataset(out).names == [names[0], names[2]]


def test_without_validation_fraction_children_validate_on_their_training_data(cells, tmp_path):
    recipe = recipe_for(cells, base={"sets": 8}, overrides=FAST | {"val_fraction": 0})
    training, validating = prepare_data(recipe, tmp_path, 0.0)
    assert validating(0, 4) == training(0, 4) and not (tmp_path / "data" / "validation").exists()
    names = scan_dataset(training(0, 0)).names
    assert names == [f"base-cellA-z{z:04d}" for z in range(8)]  # every base-cell slice


def test_initial_weights_handler_loads_a_state_dict(tmp_path):
    torch.manual_seed(1)
    source = build_network("unet", 1, 3, {"unet": TINY_UNET})
    torch.save(source.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(2)
    target = build_network("unet", 1, 3, {"unet": TINY_UNET})
    InitialWeights(None, target).started()  # no path: nothing happens
    assert not torch.equal(
        target.state_dict()["model.0.conv.weight"], source.state_dict()["model.0.conv.weight"]
    )
    InitialWeights(tmp_path / "w.pt", target).started()
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value)
    other = build_network("unet", 3, 3, {"unet": TINY_UNET})
    with pytest.raises(SeglabError, match="do not fit the network"):
        InitialWeights(tmp_path / "w.pt", other).started()
    with pytest.raises(SeglabError, match="not found"):
        InitialWeights(tmp_path / "missing.pt", other).started()


# ------------------------------------------------------------------------------- the study runs
def recipe_for(cells: Path, **changes):
    data = {
        "kind": "ablation",
        "name": "ablation-test",
        "bundle": "mito",
        "data": str(cells / "cellA"),
        "base": {"sets": 4},
        "added": {"data": str(cells / "cellB"), "sets": [0, 4]},
        "eval_data": str(cells / "cellB-test"),
        "arms": {"plain": {}, "remap": {"intensity_remap": True}},
        "overrides": FAST,
        "seed": 0,
        "repeats": 1,
    } | changes
    return parse_recipe(data)


@pytest.fixture(scope="module")
def study(cells, tmp_path_factory, register_tiny_mito_model):
    """One ablation (2 k x 2 arms) fine-tuned from a registered model, then run again."""
    root = tmp_path_factory.mktemp("study")
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = resolve_store(root / "mlruns")
    version = register_tiny_mito_model(store, root, name="mito-pre")
    recipe = recipe_for(cells, init="models:/mito-pre/1", register="mito-ablation")
    lines: list[str] = []
    first = run_ablation(store, recipe, root=root / "studies", echo=lines.append)
    second = run_ablation(store, recipe, root=root / "studies", echo=lines.append)
    yield {
        "store": store,
        "recipe": recipe,
        "first": first,
        "second": second,
        "root": root,
        "version": version,
        "lines": lines,
    }
    mp.undo()


def children_of(store, parent):
    client = store.client()
    experiment = client.get_experiment_by_name("studies")
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'"
    )


def test_children_are_nested_under_the_parent(study):
    first = study["first"]
    assert first.failed == 0 and first.children == 4 and first.skipped == 0
    runs = children_of(study["store"], first.run_id)
    keys = sorted(r.data.tags[TAG_CHILD_KEY] for r in runs)
    assert keys == sorted(f"k={k} arm={arm} repeat=0" for k in (0, 4) for arm in ("plain", "remap"))
    assert all(r.info.status == "FINISHED" for r in runs)
    remap = {r.data.tags[TAG_CHILD_KEY]: r.data.params["intensity_remap"] for r in runs}
    assert remap["k=4 arm=remap repeat=0"] == "true" and remap["k=4 arm=plain repeat=0"] == "false"


def test_child_training_data_is_base_plus_k_added_slices(study):
    data = study["root"] / "studies" / f"ablation-test-{study['recipe'].digest}" / "data"
    k0, k4 = scan_dataset(data / "repeat0-k0").names, scan_dataset(data / "repeat0-k4").names
    base = [n for n in k4 if n.startswith("base-cellA-z")]
    added = [n for n in k4 if n.startswith("added-cellB-z")]
    assert len(base) == 4 and len(added) == 4 and len(k4) == 8
    assert k0 == base  # the same base sets for every k
    validation = scan_dataset(data / "validation").names
    assert len(validation) == 2 and not {n.split("-z")[1] for n in validation} & {
        n.split("-z")[1] for n in base
    }
    assert all(s.image_info.shape == (2, 64, 64) for s in scan_dataset(data / "repeat0-k4"))


def test_table_equals_the_child_runs_metrics(study):
    import csv

    first = study["first"]
    runs = {r.data.tags[TAG_CHILD_KEY]: r for r in children_of(study["store"], first.run_id)}
    with open(first.outputs["table2.csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    parent = study["store"].client().get_run(first.run_id)
    for row in rows:
        run = runs[f"k={row['k']} arm={row['arm']} repeat=0"]
        for name, metric in TABLE_METRICS.items():
            assert float(row[name]) == pytest.approx(run.data.metrics[metric])
        assert parent.data.metrics[f"f/{row['arm']}/k{row['k']}"] == pytest.approx(
            run.data.metrics["final_f_score"]
        )
    assert first.outputs["f_vs_labels.png"].stat().st_size > 0
    assert "| added sets |" in first.outputs["table2.md"].read_text()
    artifacts = {
        Path(a.path).name for a in study["store"].client().list_artifacts(first.run_id, "report")
    }
    assert {"table2.csv", "table2.md", "f_vs_labels.png", "children.csv"} <= artifacts


def test_best_child_is_registered_once(study):
    first, second = study["first"], study["second"]
    assert first.best["registered"] == "mito-ablation/1"
    assert second.best["registered"] == "mito-ablation/1"  # the re-run does not register again
    versions = study["store"].client().search_model_versions("name = 'mito-ablation'")
    assert len(versions) == 1 and versions[0].run_id == first.best["run_id"]
    tags = study["store"].client().get_run(first.best["run_id"]).data.tags
    assert tags["seglab.registered"] == "mito-ablation/1" and tags["seglab.best_child"] == "true"


def test_children_start_from_the_registered_weights(study):
    runs = children_of(study["store"], study["first"].run_id)
    paths = {r.data.params["initial_weights"] for r in runs}
    assert len(paths) == 1
    given = torch.load(paths.pop(), weights_only=True)
    from seglab.models.registry import fetch_model

    folder = study["root"] / "fetched"
    folder.mkdir()
    fetch_model(study["store"], "models:/mito-pre/1", folder)
    registered = torch.load(folder / "artifacts/bundle/models/member0.pt", weights_only=True)
    assert given.keys() == registered.keys()
    assert all(torch.equal(given[k], registered[k]) for k in given)


def test_rerun_skips_finished_children(study):
    second = study["second"]
    assert second.run_id == study["first"].run_id
    assert (second.children, second.skipped, second.failed) == (4, 4, 0)
    assert len(children_of(study["store"], second.run_id)) == 4
    assert sum("skipped" in line for line in study["lines"]) == 4


def test_unknown_init_model_fails_before_any_run(cells, study):
    store = study["store"]
    recipe = recipe_for(cells, name="ablation-missing", init="models:/nope@champion")
    client = store.client()
    before = len(client.search_runs([client.get_experiment_by_name("studies").experiment_id]))
    with pytest.raises(SeglabError, match="no registered model 'nope'"):
        run_ablation(store, recipe, root=study["root"] / "studies", echo=lambda _: None)
    after = len(client.search_runs([client.get_experiment_by_name("studies").experiment_id]))
    assert after == before
