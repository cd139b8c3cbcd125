"""``seglab run`` and ``seglab search``: what the commands say about bad recipes."""

import pytest
import yaml

from seglab.cli.app import main


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def here(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)


def write(tmp_path, data, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


TILING = {
    "kind": "tiling", "name": "t", "bundle": "lung", "data": "d",
    "grid": {"tiling_preset": ["no-overlap"]},
}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.yaml"], "recipe missing.yaml not found"),
        (["run", "BAD"], "recipe in BAD: grid.tilng_preset"),
        (["run", "TYPO"], "sets config id(s) tilng_preset that bundle lung does not have"),
        (["search", "TILING"], "is a tiling recipe, not a search"),
        (["run", "YAML"], "is not valid YAML at line 2"),
    ],
)
def test_bad_recipes_are_one_line_errors(tmp_path, capsys, args, message):
    paths = {
        "BAD": write(tmp_path, {**TILING, "grid": {"tilng_preset": 3}}, "bad.yaml"),
        "TYPO": write(tmp_path, {**TILING, "grid": {"tilng_preset": ["x"]}}, "typo.yaml"),
        "TILING": write(tmp_path, TILING, "tiling.yaml"),
        "YAML": write(tmp_path, "kind: tiling\n  grid: [\n", "yaml.yaml"),
    }
    args = [str(paths.get(a, a)) for a in args]
    code, _, err = run(capsys, *args, "--store", tmp_path / "mlruns")
    assert code == 2, err
    message = message.replace("BAD", str(paths["BAD"]))
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "studies").exists()
