"""Recipe files: every shipped recipe loads; bad content is a one-line error naming the key."""

from pathlib import Path

import pytest

from seglab.errors import DataFileError, SeglabError
from seglab.studies.recipes import (
    AblationRecipe,
    PostprocessSearchRecipe,
    SearchRecipe,
    TilingRecipe,
    load_recipe,
    parse_recipe,
)

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
KIND_CLASSES = {
    "tiling": TilingRecipe,
    "ablation": AblationRecipe,
    "search": SearchRecipe,
    "postprocess-search": PostprocessSearchRecipe,
}


@pytest.mark.parametrize("path", sorted(PIPELINES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, KIND_CLASSES[recipe.kind])
    assert recipe.path == path and len(recipe.digest) == 16


def test_the_shipped_recipes_cover_every_kind():
    kinds = {load_recipe(p).kind for p in PIPELINES.glob("*.yaml")}
    assert kinds == set(KIND_CLASSES)


SEARCH = {
    "kind": "search",
    "name": "s",
    "bundle": "lung",
    "data": "d",
    "search": {
        "space": {
            "loss": {"choices": {"mse": {"loss_name": "mse"}, "ce": {"loss_name": "ce"}}},
            "learning_rate": {"low": 1e-4, "high": 0.1, "log": True},
            "epochs": {"low": 2, "high": 9, "integer": True},
            "network_name": {"choices": ["unet", "segnet"]},
        }
    },
}


def test_search_space_kinds_and_config_ids():
    recipe = parse_recipe(SEARCH)
    by_name = {p.name: p for p in recipe.space}
    assert by_name["loss"].options == {"mse": {"loss_name": "mse"}, "ce": {"loss_name": "ce"}}
    assert by_name["learning_rate"].log and by_name["learning_rate"].low == 1e-4
    assert by_name["epochs"].integer
    assert by_name["network_name"].choices == ["unet", "segnet"]
    assert sorted(recipe.config_ids()) == ["epochs", "learning_rate", "loss_name", "network_name"]
    assert recipe.trials == 10 and recipe.pruner == "median" and recipe.storage is None


def test_the_digest_follows_the_content():
    first = parse_recipe(SEARCH)
    assert parse_recipe(dict(SEARCH)).digest == first.digest
    assert parse_recipe({**SEARCH, "name": "t"}).digest != first.digest


def with_key(base, dotted, value):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    keys = dotted.split(".")
    target = data
    for key in keys[:-1]:
        target[key] = dict(target[key])
        target = target[key]
    target[keys[-1]] = value
    return data


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("kind", "grid", "kind must be one of tiling, ablation, search, postprocess-search"),
        ("serach", {}, "serach is not a recipe key"),
        ("name", "", "name must be non-empty text"),
        ("repeats", 0, "repeats must be an integer >= 1, got 0"),
        ("seed", 1.5, "seed must be an integer >= 0"),
        ("overrides", [1, 2], "overrides must be a mapping, got list"),
        ("search.trials", "many", "search.trials must be an integer >= 1"),
        ("search.pruner", "hyperband", "search.pruner is 'hyperband'"),
        ("search.direction", "up", "search.direction is 'up'"),
        ("search.space", {}, "search.space is missing or empty"),
        ("search.space.lr", {"low": 0.1, "high": 0.01}, "search.space.lr needs low < high"),
        ("search.space.lr", {"low": 0, "high": 1, "log": True}, "log range needs low > 0"),
        ("search.space.lr", {"low": 0.1}, "needs choices, or low and high"),
        ("search.space.lr", {"choices": [1], "low": 0}, "mixes choices with a range"),
        ("search.space.lr", {"step": 2}, "search.space.lr.step is not a recipe key"),
        ("search.space.lr", {"choices": []}, "search.space.lr.choices must be a non-empty list"),
        ("search.space.lr", {"low": "a", "high": 1}, "search.space.lr.low must be a number"),
        ("search.train_best", "yes", "search.train_best must be true or false"),
    ],
)
def test_bad_recipes_are_one_line_errors(dotted, value, message):
    with pytest.raises(SeglabError) as caught:
        parse_recipe(with_key(SEARCH, dotted, value), Path("r.yaml"))
    text = str(caught.value)
    assert message in text and "\n" not in text and "in r.yaml" in text


def test_missing_keys_per_kind():
    with pytest.raises(SeglabError, match="data is missing"):
        parse_recipe({"kind": "tiling", "name": "t", "bundle": "lung"})
    with pytest.raises(SeglabError, match="grid is missing or empty"):
        parse_recipe({"kind": "tiling", "name": "t", "bundle": "lung", "data": "d"})
    with pytest.raises(SeglabError, match="base is missing"):
        parse_recipe({"kind": "ablation", "name": "a", "bundle": "mito", "data": "d"})
    with pytest.raises(SeglabError, match="init must be scratch or models:/NAME@ALIAS"):
        parse_recipe(
            {
                "kind": "ablation", "name": "a", "bundle": "mito", "data": "d",
                "eval_data": "e", "base": {"sets": 4}, "added": {"data": "b", "sets": [0, 2]},
                "init": "pretrained.pt",
            }
        )  # fmt: skip


def test_recipe_files_that_are_not_recipes(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: search\n  name: [unclosed\n")
    with pytest.raises(DataFileError, match="is not valid YAML at line 2"):
        load_recipe(broken)
    code = tmp_path / "code.yaml"
    code.write_text("kind: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(DataFileError, match="not valid YAML"):  # safe_load builds no objects
        load_recipe(code)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(SeglabError, match="kind must be one of"):
        load_recipe(empty)
