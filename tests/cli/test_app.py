import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seglab import __version__
from seglab.cli.app import main
from seglab.io.dataset import scan_dataset, verify_manifest
from seglab.io.images import read_image

REPO = Path(__file__).resolve().parents[2]


def run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"seglab {__version__}"


def test_help_lists_the_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "phantom" in out and "demo" in out


def test_help_does_not_import_torch_monai_or_mlflow():
    code = (
        "import sys\n"
        "from seglab.cli.app import main\n"
        "assert main(['--help']) == 0\n"
        "heavy = [m for m in ('torch', 'monai', 'mlflow', 'optuna') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_console_script_exits_with_one_line_error_for_bad_input(tmp_path):
    script = Path(sys.executable).with_name("seglab")
    if not script.exists():
        pytest.skip("console script not installed")
    out = tmp_path / "x"
    proc = subprocess.run(
        [str(script), "phantom", "sem", str(out), "--shape", "0", "10", "10"],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("seglab: error: ")
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_phantom_lung_writes_a_readable_dataset(capsys, tmp_path):
    out = tmp_path / "lung"
    code, stdout, _ = run(capsys, "phantom", "lung", str(out), "--count", "2", "--size", "96")
    assert code == 0 and f"outputs in {out}" in stdout
    dataset = scan_dataset(out)
    assert dataset.names == ["lung_000", "lung_001"]
    sample = dataset.load("lung_000")
    assert sample.image.shape == (96, 96, 3) and sample.label.shape == (96, 96)
    assert set(np.unique(sample.label)) <= set(range(6))
    assert verify_manifest(out).ok


def test_phantom_sem_writes_stack_labels_contours_and_truth(capsys, tmp_path):
    out = tmp_path / "sem"
    code, _, _ = run(
        capsys,
        "phantom",
        "sem",
        str(out),
        "--shape",
        "16",
        "64",
        "64",
        "--cell",
        "B",
        "--seed",
        "3",
    )
    assert code == 0
    image = read_image(out / "images" / "cellB.tif")
    labels = read_image(out / "labels" / "cellB.tif").array
    assert image.array.shape == (16, 64, 64) and image.array.dtype == np.uint8
    assert image.spacing is not None and len(image.spacing) == 3
    rows = (out / "truth.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == len(np.unique(labels)) - 1  # one row per object present
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["config"]["cell"] == "B" and meta["config"]["seed"] == 3


def test_phantom_sem_count_writes_several_stacks_into_one_dataset(capsys, tmp_path):
    out = tmp_path / "sem"
    args = ["phantom", "sem", str(out), "--shape", "8", "48", "48", "--count", "2", "--seed", "5"]
    code, _, _ = run(capsys, *args)
    assert code == 0
    assert sorted(scan_dataset(out).names) == ["cellA_00", "cellA_01"]
    first = read_image(out / "images" / "cellA_00.tif").array
    second = read_image(out / "images" / "cellA_01.tif").array
    assert not np.array_equal(first, second)  # seeds 5 and 6
    meta = json.loads((out / "phantom.json").read_text())
    assert [m["config"]["seed"] for m in meta["stacks"].values()] == [5, 6]
    header = (out / "truth.csv").read_text().splitlines()[0]
    assert header.startswith("stack,")


def test_existing_output_is_refused_without_overwrite_and_kept(capsys, tmp_path):
    out = tmp_path / "lung"
    assert run(capsys, "phantom", "lung", str(out), "--count", "1", "--size", "64")[0] == 0
    before = sorted(p.name for p in out.rglob("*"))
    code, _, err = run(capsys, "phantom", "lung", str(out), "--count", "1", "--size", "64")
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert sorted(p.name for p in out.rglob("*")) == before
    code, _, _ = run(
        capsys, "phantom", "lung", str(out), "--count", "1", "--size", "64", "--overwrite"
    )
    assert code == 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["phantom", "sem", "{out}", "--voxel-size", "0", "0.02", "0.02"], "voxel"),
        (["phantom", "sem", "{out}", "--axis", "0", "0", "0"], "axis"),
        (["phantom", "lung", "{out}", "--size", "10"], "greater than or equal to 64"),
        (["phantom", "sem", "{out}", "--cell", "C"], "'C'"),
    ],
)
def test_bad_options_give_one_clear_line_and_no_output(capsys, tmp_path, args, match):
    out = tmp_path / "o"
    code, _, err = run(capsys, *[a.format(out=out) for a in args])
    assert code == 2
    assert match in err and "Traceback" not in err
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path):
    from seglab.errors import SeglabError

    with pytest.raises(SeglabError):
        main(["--debug", "phantom", "sem", str(tmp_path / "o"), "--shape", "0", "1", "1"])


def test_platform_stdlib_module_is_not_shadowed_from_the_repo_root():
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert out.stdout.strip() in {"Linux", "Darwin", "Windows"}
