"""Optuna search over the instance-splitting parameters against labelled SEM phantoms."""

import json

import numpy as np
import pytest
import yaml

from seglab.errors import DataFileError, SeglabError
from seglab.instances import SplitParams, instance_f1, split_instances_chunked
from seglab.io.images import write_image
from seglab.phantoms.sem import make_sem_phantom, noisy_probability_maps
from seglab.studies.postprocess import load_labelled_maps, run_postprocess_search, score_split
from seglab.studies.recipes import load_recipe, parse_recipe
from seglab.studies.runner import TAG_PARENT

optuna = pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Two labelled stacks with noisy maps (a network that misses 20 % of the contours)."""
    root = tmp_path_factory.mktemp("pp")
    for i, seed in enumerate((3, 4)):
        phantom = make_sem_phantom(shape=(12, 96, 96), seed=seed)
        name = f"cellA_{i:02d}"
        write_image(root / "data" / "images" / f"{name}.tif", phantom.image, axes="ZYX")
        write_image(root / "data" / "labels" / f"{name}.tif", phantom.instances, axes="ZYX")
        object_map, contour_map = noisy_probability_maps(phantom, seed=seed)
        write_image(root / "maps" / "object" / f"{name}.tif", object_map, axes="ZYX")
        write_image(root / "maps" / "contour" / f"{name}.tif", contour_map, axes="ZYX")
    return root


@pytest.fixture(autouse=True)
def no_team_server(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)


def recipe(root, **search):
    return {
        "kind": "postprocess-search",
        "name": "split-search",
        "data": str(root / "data"),
        "maps": str(root / "maps"),
        "search": {
            "trials": 6,
            "space": {
                "sigma": {"low": 0.0, "high": 3.0},
                "contour_threshold": {"low": 60, "high": 220},
                "min_size": {"low": 5, "high": 100, "integer": True},
            },
            **search,
        },
    }


def test_score_split_agrees_with_a_direct_split(labelled):
    stacks = load_labelled_maps(labelled / "data", labelled / "maps")
    assert [s.name for s in stacks] == ["cellA_00", "cellA_01"]
    params = SplitParams(sigma=1.5)
    scores = score_split(stacks, params)
    direct = [
        instance_f1(split_instances_chunked(s.object_map, s.contour_map, params).labels, s.truth).f1
        for s in stacks
    ]
    assert scores["instance_f1"] == pytest.approx(np.mean(direct))
    assert scores["instance_f1/cellA_01"] == pytest.approx(direct[1])
    assert 0 <= scores["volume_fraction_error"] < 1


def test_search_finds_parameters_at_least_as_good_as_the_defaults(labelled, tmp_path):
    from seglab.tracking.store import resolve_store

    store = resolve_store(tmp_path / "mlruns")
    path = tmp_path / "pp.yaml"
    path.write_text(yaml.safe_dump(recipe(labelled)))
    loaded = load_recipe(path)
    result = run_postprocess_search(store, loaded, out_dir=tmp_path / "report", echo=print)
    stacks = load_labelled_maps(labelled / "data", labelled / "maps")
    default_f1 = score_split(stacks, SplitParams())["instance_f1"]
    best = json.loads((tmp_path / "report" / "best.json").read_text())
    # trial 0 is the defaults, so the best is never worse than them
    assert best["instance_f1"] >= default_f1
    client = store.client()
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{result.run_id}'"
    )
    assert len(children) == 6
    trial0 = next(r for r in children if r.data.tags["seglab.trial_number"] == "0")
    assert trial0.data.metrics["instance_f1"] == pytest.approx(default_f1)
    assert trial0.data.params["sigma"] == "1.0" and trial0.data.params["min_size"] == "50"
    best_run = client.get_run(best["run_id"])
    assert best_run.data.metrics["instance_f1"] == pytest.approx(best["instance_f1"])
    assert best_run.data.tags["seglab.trial_state"] == "COMPLETE"
    assert "--sigma" in best["split_options"] and "--min-size" in best["split_options"]
    assert any("seglab morphometry split" in line for line in result.lines)

    # the study resumes: asking for 8 trials runs only the 2 missing ones
    more = parse_recipe(recipe(labelled, trials=8), path)
    assert more.digest != loaded.digest  # a changed recipe is a new study...
    again = run_postprocess_search(store, loaded, out_dir=tmp_path / "report")
    assert again.run_id == result.run_id and again.children == 6  # ...the same one is not rerun


def test_missing_maps_and_bad_space_are_one_line_errors(labelled, tmp_path):
    from seglab.tracking.store import resolve_store

    store = resolve_store(tmp_path / "mlruns")
    bad = recipe(labelled)
    bad["maps"] = str(tmp_path / "nomaps")
    with pytest.raises(DataFileError, match="no object map for cellA_00"):
        run_postprocess_search(store, parse_recipe(bad))
    wrong = recipe(labelled)
    wrong["search"]["space"]["blur"] = {"low": 0, "high": 1}
    with pytest.raises(SeglabError, match="must name split parameters, got \\['blur'\\]"):
        parse_recipe(wrong)
    both = recipe(labelled)
    both["model"] = "models:/x@champion"
    with pytest.raises(SeglabError, match="maps or model must be given \\(one of them\\)"):
        parse_recipe(both)
