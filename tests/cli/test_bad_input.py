"""The bad-input corpus (issue F6 item 1): every command refuses bad input in one line.

Each case makes one bad input in its own folder, runs the command in this process through
:func:`seglab.cli.app.main` and checks what the user sees: a non-zero exit, exactly one line on
stderr (``seglab: error: ...``, never ``internal error``, no traceback, no progress bars or
warnings), naming the offending thing and saying what to do (the case's key words); and that
nothing new appeared (no output folder, no temporary file; the ``.log`` files the command log
writes beside an output are allowed), that a folder which existed is untouched, and that no
MLflow run was recorded. With ``--debug`` the same command raises the error with its traceback.

Bad inputs are refused before any training, so the whole file runs in seconds: the imports of
torch, MONAI and MLflow and one tiny registered model (shared by the module) are most of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from seglab.cli.app import main
from seglab.errors import SeglabError
from seglab.io.images import read_image, write_image

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


@dataclass(frozen=True)
class Shared:
    """Inputs every case may read (never write): phantoms and a store with a tiny model."""

    root: Path
    lung: Path  # dataset: 3 RGB lung phantoms of 64 px, colour labels, classes.json
    sem_image: Path  # (8, 48, 48) uint8 SEM stack with its voxel size
    sem_labels: Path  # its instance labels
    store: Path  # embedded MLflow store: mito-tiny and lung-tiny version 1 (no aliases)

    @property
    def store_args(self) -> list[str]:
        return ["--store", str(self.store)]


@pytest.fixture(scope="module")
def shared(tmp_path_factory, write_lung_dataset, register_tiny_mito_model) -> Shared:
    from seglab.tracking.store import resolve_store
    from seglab.workflows.phantoms import write_sem_phantom

    root = tmp_path_factory.mktemp("shared")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        lung = write_lung_dataset(root / "lung", range(3), size=64)
        write_sem_phantom(root / "sem", shape=(8, 48, 48), seed=0)
        store = resolve_store(root / "store")
        register_tiny_mito_model(store, root, "mito-tiny")
        _register_tiny_lung_model(store, root)
    return Shared(
        root=root,
        lung=lung,
        sem_image=root / "sem" / "images" / "cellA.tif",
        sem_labels=root / "sem" / "labels" / "cellA.tif",
        store=root / "store",
    )


def _register_tiny_lung_model(store, root: Path) -> None:
    """An untrained 6-class lung U-Net of 4 and 8 channels, registered as lung-tiny."""
    import torch

    from seglab.io.labels import LUNG_CLASSES
    from seglab.models.publish import log_model, register_model
    from seglab.models.pyfunc import MemberSettings, ModelSettings
    from seglab.networks.factory import build_network
    from seglab.tracking.runs import tracked_run

    options = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
    names = [c.name for c in LUNG_CLASSES.classes]
    weights = root / "lung.pt"
    torch.manual_seed(0)
    torch.save(build_network("unet", 3, len(names), {"unet": options}).state_dict(), weights)
    settings = ModelSettings(
        bundle="lung",
        kind="multiclass",
        class_names=names,
        in_channels=3,
        members=[MemberSettings("unet", options, 1)],
        tiling_preset="no-overlap",
        tile_batch_size=4,
    )
    with tracked_run(store, "lung", "lung-tiny") as run:
        register_model(store, "lung-tiny", log_model(run, settings, [weights]))


# -- makers of bad inputs (all write into the case's folder) -----------------------------------
def _lung_copy(shared: Shared, tmp: Path, change: Callable[[Path], None]) -> Path:
    data = tmp / "lung"
    shutil.copytree(shared.lung, data)
    change(data)
    return data


def _grey_image(data: Path) -> None:
    path = data / "images" / "lung_1.png"
    write_image(path, read_image(path).array[..., 0])


def _to_rgba(path: Path) -> None:
    rgb = read_image(path).array
    write_image(path, np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], -1))


def _rgba_image(data: Path) -> None:
    _to_rgba(data / "images" / "lung_1.png")


def _nan_image(data: Path) -> None:
    path = data / "images" / "lung_1.png"
    pixels = read_image(path).array.astype(np.float32)
    pixels[3, 3, 0] = np.nan
    path.unlink()
    write_image(data / "images" / "lung_1.tif", pixels)


def _background_labels(data: Path) -> None:
    for path in (data / "labels").iterdir():
        write_image(path, np.zeros_like(read_image(path).array))  # black: background


def _foreign_colours(data: Path) -> None:
    path = data / "labels" / "lung_2.png"
    label = read_image(path).array.copy()
    label[:5, :5] = (1, 2, 3)
    write_image(path, label)


def _small_label(data: Path) -> None:
    path = data / "labels" / "lung_2.png"
    write_image(path, read_image(path).array[:32])


def _truncated(source: Path, path: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 600, np.uint8).tobytes())
    return path


def _float_stack(shared: Shared, path: Path, value: float) -> Path:
    image = read_image(shared.sem_image)
    pixels = image.array.astype(np.float32)
    pixels[2, 5, 5] = value
    return write_image(path, pixels, image.spacing)


def _empty_stack(path: Path) -> Path:
    import tifffile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns that a zero-size TIFF is nonconformant
        tifffile.imwrite(path, np.zeros((0, 8, 8), np.uint8))
    return path


def _existing(folder: Path) -> Path:
    folder.mkdir()
    (folder / "keep.txt").write_text("an earlier result\n")
    return folder


def _checkpoint_folder(tmp: Path) -> Path:
    folder = tmp / "checkpoints"
    folder.mkdir()
    _garbage(folder / "checkpoint.pt")
    return folder


def _recipe(tmp: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _search_recipe(shared: Shared, tmp: Path) -> Path:
    return _recipe(
        tmp,
        f"kind: search\nname: s1\nbundle: lung\ndata: {shared.lung}\n"
        "search:\n  trials: 1\n  space: {learning_rate: {low: 0.001, high: 0.1}}\n",
    )


# -- the corpus ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """A bad input, the command that gets it, and what its one line must say.

    Attributes
    ----------
    command : callable
        ``command(shared, tmp) -> argv`` makes the bad input in ``tmp`` and returns the
        arguments (without ``seglab``).
    says : tuple of str
        Words the line must contain (case-insensitive): the offending file, key or value, and
        the fix.
    env : dict
        Environment variables for the command.
    untouched : str
        A folder of the case (relative to ``tmp``) that existed before and must not change.
    """

    command: Callable[[Shared, Path], list[str]]
    says: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    untouched: str = ""


def _train(data: Callable[[Shared, Path], Path], *more: str) -> Callable[[Shared, Path], list]:
    def command(s: Shared, t: Path) -> list:
        return ["train", "lung", "--data", data(s, t), "--output", t / "out", *s.store_args, *more]

    return command


def _measure(*args: str | Callable[[Shared, Path], object]) -> Callable[[Shared, Path], list]:
    def command(s: Shared, t: Path) -> list:
        return ["morphometry", "measure", *(a(s, t) if callable(a) else a for a in args)]

    return command


def _lung(change: Callable[[Path], None]) -> Callable[[Shared, Path], Path]:
    return lambda s, t: _lung_copy(s, t, change)


def _good_lung(s: Shared, t: Path) -> Path:
    return s.lung


def _labels(s: Shared, t: Path) -> Path:
    return s.sem_labels


def _out(s: Shared, t: Path) -> Path:
    return t / "out"


MODEL = "models:/mito-tiny/1"
LUNG_MODEL = "models:/lung-tiny/1"

# fmt: off
CASES: dict[str, Case] = {
    # phantom
    "phantom-sem-empty-stack": Case(
        lambda s, t: ["phantom", "sem", t / "out", "--shape", "0", "16", "16"],
        ("shape", "(0, 16, 16)", "(z, y, x)"),
    ),
    "phantom-sem-zero-voxel-size": Case(
        lambda s, t: ["phantom", "sem", t / "out", "--shape", "4", "32", "32",
                      "--voxel-size", "0", "0.04", "0.04"],
        ("voxel_size", "(0.0, 0.04, 0.04)", "positive", "e.g."),
    ),
    "phantom-sem-negative-voxel-size": Case(
        lambda s, t: ["phantom", "sem", t / "out", "--shape", "4", "32", "32",
                      "--voxel-size", "-0.1", "0.04", "0.04"],
        ("voxel_size", "-0.1", "positive"),
    ),
    "phantom-lung-existing-output": Case(
        lambda s, t: ["phantom", "lung", _existing(t / "out"), "--size", "64", "--count", "1"],
        ("out", "already exists", "--overwrite"),
        untouched="out",
    ),
    "phantom-lung-output-in-proc": Case(
        lambda s, t: ["phantom", "lung", "/proc/seglab-bad-input/out", "--size", "64"],
        ("/proc", "choose a location you can write to"),
    ),
    # morphometry
    "measure-missing-file": Case(
        _measure(lambda s, t: t / "nosuch.tif", "--out", _out),
        ("nosuch.tif", "not found", "check the path"),
    ),
    "measure-truncated-tiff": Case(
        _measure(lambda s, t: _truncated(s.sem_labels, t / "cut.tif"), "--out", _out),
        ("cut.tif", "truncated", "re-"),
    ),
    "measure-corrupt-tiff": Case(
        _measure(lambda s, t: _garbage(t / "garbage.tif"), "--out", _out),
        ("garbage.tif", "corrupt", "re-export"),
    ),
    "measure-empty-stack": Case(
        _measure(lambda s, t: _empty_stack(t / "empty.tif"), "--out", _out),
        ("empty.tif", "no pixels", "(0, 8, 8)", "check"),
    ),
    "measure-nan-image": Case(
        _measure(_labels, "--image", lambda s, t: _float_stack(s, t / "nan.tif", np.nan),
                 "--out", _out),
        ("nan.tif", "nan", "slice 2", "replace them"),
    ),
    "measure-inf-image": Case(
        _measure(_labels, "--image", lambda s, t: _float_stack(s, t / "inf.tif", np.inf),
                 "--out", _out),
        ("inf.tif", "infinite", "replace them"),
    ),
    "measure-zero-voxel-size": Case(
        _measure(_labels, "--voxel-size", "0", "0.01", "0.01", "--out", _out),
        ("voxel size", "(0.0, 0.01, 0.01)", "--voxel-size"),
    ),
    "measure-negative-voxel-size": Case(
        _measure(_labels, "--voxel-size", "-0.1", "0.01", "0.01", "--out", _out),
        ("voxel size", "-0.1", "--voxel-size"),
    ),
    "measure-no-voxel-size": Case(
        _measure(lambda s, t: write_image(t / "bare.tif", read_image(s.sem_labels).array),
                 "--out", _out),
        ("stores no voxel size", "--voxel-size"),
    ),
    "measure-image-of-another-shape": Case(
        _measure(_labels, "--image",
                 lambda s, t: write_image(t / "crop.tif", read_image(s.sem_image).array[:, :20]),
                 "--out", _out),
        ("image", "(8, 20, 48)", "(8, 48, 48)", "same stack"),
    ),
    "measure-colour-stack-as-labels": Case(
        _measure(lambda s, t: write_image(t / "rgb.tif",
                                          np.stack([read_image(s.sem_labels).array] * 3, -1),
                                          axes="ZYXC"),
                 "--out", _out),
        ("rgb.tif", "ZYXC", "single-channel"),
    ),
    "measure-existing-output": Case(
        _measure(_labels, "--out", lambda s, t: _existing(t / "out")),
        ("out", "already exists", "--overwrite"),
        untouched="out",
    ),
    "measure-output-in-sys": Case(
        _measure(_labels, "--out", "/sys/seglab-bad-input"),
        ("/sys", "choose a location you can write to"),
    ),
    "split-truncated-map": Case(
        lambda s, t: ["morphometry", "split", s.sem_image,
                      _truncated(s.sem_labels, t / "contours.tif"), "--out", t / "labels.tif"],
        ("contours.tif", "truncated", "re-"),
    ),
    "morphometry-run-missing-model": Case(
        lambda s, t: ["morphometry", "run", s.sem_image, "--model", "models:/nosuch@champion",
                      "--out", t / "out", *s.store_args],
        ("no registered model 'nosuch'", "seglab models list"),
    ),
    "morphometry-run-nan-stack": Case(
        lambda s, t: ["morphometry", "run", _float_stack(s, t / "nan.tif", np.nan),
                      "--model", MODEL, "--out", t / "out", *s.store_args],
        ("nan.tif", "nan", "slice 2", "replace them"),
    ),
    "morphometry-run-missing-alias": Case(
        lambda s, t: ["morphometry", "run", s.sem_image, "--model", "models:/mito-tiny@champion",
                      "--out", t / "out", *s.store_args],
        ("@champion", "seglab models show mito-tiny"),
    ),
    # segment
    "segment-nan-pixels": Case(
        lambda s, t: ["segment", "--model", MODEL, _float_stack(s, t / "nan.tif", np.nan),
                      "--out", t / "out", *s.store_args],
        ("nan.tif", "1 nan", "replace them"),
    ),
    "segment-wrong-channel-count": Case(
        lambda s, t: ["segment", "--model", MODEL, s.lung / "images" / "lung_0.png",
                      "--out", t / "out", *s.store_args],
        ("lung_0.png", "takes 1 channel", "has 3", "channels the model was trained on"),
    ),
    "segment-missing-image": Case(
        lambda s, t: ["segment", "--model", MODEL, t / "nosuch.tif", "--out", t / "out",
                      *s.store_args],
        ("nosuch.tif", "does not exist", "existing image"),
    ),
    "segment-model-uri-not-understood": Case(
        lambda s, t: ["segment", "--model", "mito-tiny", s.sem_image, "--out", t / "out",
                      *s.store_args],
        ("'mito-tiny'", "models:/NAME@champion"),
    ),
    "segment-existing-output": Case(
        lambda s, t: ["segment", "--model", MODEL, s.sem_image, "--out", _existing(t / "out"),
                      *s.store_args],
        ("out", "already exists", "--overwrite"),
        untouched="out",
    ),
    "segment-unreachable-tracking-server": Case(
        lambda s, t: ["segment", "--model", "models:/a@champion", s.sem_image,
                      "--out", t / "out"],
        (UNREACHABLE, "does not answer", "MLFLOW_TRACKING_URI"),
        env={"MLFLOW_TRACKING_URI": UNREACHABLE},
    ),
    # evaluate
    "evaluate-label-colours-not-in-table": Case(
        lambda s, t: ["evaluate", "--model", LUNG_MODEL,
                      "--data", _lung_copy(s, t, _foreign_colours),
                      "--out", t / "out", *s.store_args],
        ("lung_2.png", "(1, 2, 3)", "not in the class table", "classes.json"),
    ),
    "evaluate-label-of-another-shape": Case(
        lambda s, t: ["evaluate", "--model", LUNG_MODEL, "--data", _lung_copy(s, t, _small_label),
                      "--out", t / "out", *s.store_args],
        ("lung_2", "(32, 64)", "(64, 64)", "resize or re-export"),
    ),
    "evaluate-wrong-channel-count": Case(
        lambda s, t: ["evaluate", "--model", MODEL, "--data", s.lung, "--out", t / "out",
                      *s.store_args],
        ("lung_0.png has 3", "1 channel(s) (grey)", "convert them"),
    ),
    "evaluate-nan-pixels": Case(
        lambda s, t: ["evaluate", "--model", LUNG_MODEL, "--data", _lung_copy(s, t, _nan_image),
                      "--out", t / "out", *s.store_args],
        ("lung_1.tif", "1 nan", "replace them"),
    ),
    "evaluate-missing-dataset": Case(
        lambda s, t: ["evaluate", "--model", MODEL, "--data", t / "nosuch", "--out", t / "out",
                      *s.store_args],
        ("nosuch", "not found", "images/"),
    ),
    # train
    "train-greyscale-image": Case(
        _train(_lung(_grey_image)), ("lung_1.png has 1", "3 channel(s)", "convert them")
    ),
    "train-rgba-image": Case(
        _train(_lung(_rgba_image)), ("lung_1.png has 4", "3 channel(s)", "convert them")
    ),
    "train-nan-pixels": Case(_train(_lung(_nan_image)), ("lung_1.tif", "1 nan", "replace them")),
    "train-all-background-labels": Case(
        _train(_lung(_background_labels)),
        ("all background", "lung_0.png", "check the label colours", "classes.json"),
    ),
    "train-label-colours-not-in-table": Case(
        _train(_lung(_foreign_colours)),
        ("lung_2.png", "(1, 2, 3)", "not in the class table", "classes.json"),
    ),
    "train-set-malformed-json": Case(
        _train(_good_lung, "--set", "epochs=[1"), ("epochs=[1", "not valid json", "write lists")
    ),
    "train-set-wrong-type": Case(
        _train(_good_lung, "--set", 'epochs="ten"'),
        ("epochs", "integer", '"ten"', "--set epochs=250"),
    ),
    "train-set-out-of-range": Case(
        _train(_good_lung, "--set", "epochs=-1"), ("epochs", "at least 1", "-1", "--set epochs=")
    ),
    "train-set-unknown-config-id": Case(
        _train(_good_lung, "--set", "nosuchid=3"),
        ("unknown config id", "nosuchid", "lung", "check the spelling"),
    ),
    "train-set-malformed-override": Case(
        _train(_good_lung, "--set", "epochs"), ("'epochs'", "not key=value", "--set epochs=5")
    ),
    "train-corrupt-initial-weights": Case(
        lambda s, t: _train(
            _good_lung, "--set", f"initial_weights={_garbage(t / 'bad.pt')}"
        )(s, t),
        ("bad.pt", "corrupt", "torch.save"),
    ),
    "train-resume-corrupt-checkpoint": Case(
        lambda s, t: ["train", "lung", "--data", s.lung, "--output", _checkpoint_folder(t),
                      "--resume", *s.store_args],
        ("checkpoint.pt", "corrupt", "delete the file"),
        untouched="checkpoints",
    ),
    "train-existing-output": Case(
        lambda s, t: ["train", "lung", "--data", s.lung, "--output", _existing(t / "out"),
                      *s.store_args],
        ("out", "not empty", "--resume", "--overwrite"),
        untouched="out",
    ),
    "train-output-in-proc": Case(
        lambda s, t: ["train", "lung", "--data", s.lung, "--output", "/proc/seglab-bad/out",
                      *s.store_args],
        ("/proc", "choose a location you can write to"),
    ),
    "train-unknown-bundle": Case(
        lambda s, t: ["train", "nosuch", "--data", s.lung, "--output", t / "out", *s.store_args],
        ("'nosuch'", "lung, mito", "as a path"),
    ),
    "train-folder-that-is-not-a-bundle": Case(
        lambda s, t: ["train", str(_existing(t / "mine")) + "/", "--data", s.lung,
                      "--output", t / "out", *s.store_args],
        ("mine/", "no configs/train.json", "lung, mito"),
        untouched="mine",
    ),
    # models
    "models-promote-missing-model": Case(
        lambda s, t: ["models", "promote", "nosuch", "1", *s.store_args],
        ("'nosuch'", "seglab models list"),
    ),
    "models-promote-missing-version": Case(
        lambda s, t: ["models", "promote", "mito-tiny", "7", *s.store_args],
        ("mito-tiny", "version 7", "seglab models show mito-tiny"),
    ),
    "models-list-unreachable-tracking-server": Case(
        lambda s, t: ["models", "list"],
        (UNREACHABLE, "does not answer", "start it", "MLFLOW_TRACKING_URI"),
        env={"MLFLOW_TRACKING_URI": UNREACHABLE},
    ),
    "models-list-tracking-uri-not-a-uri": Case(
        lambda s, t: ["models", "list"],
        ("'not-a-uri'", "is not a uri", "http://host:5000"),
        env={"MLFLOW_TRACKING_URI": "not-a-uri"},
    ),
    # run / search
    "run-recipe-missing": Case(
        lambda s, t: ["run", t / "nosuch.yaml", *s.store_args],
        ("nosuch.yaml", "not found", "pipelines/"),
    ),
    "run-recipe-not-yaml": Case(
        lambda s, t: ["run", _recipe(t, "kind: tiling\nname: [t1\n"), *s.store_args],
        ("recipe.yaml", "not valid yaml", "line", "fix the yaml"),
    ),
    "run-recipe-unknown-key": Case(
        lambda s, t: ["run", _recipe(t, f"kind: tiling\nname: t1\nbundle: lung\n"
                                        f"data: {s.lung}\ngrid: {{network_name: [unet]}}\n"
                                        "repeat: 2\n"), *s.store_args],
        ("recipe.yaml", "repeat is not a recipe key", "repeats"),
    ),
    "run-recipe-wrong-type": Case(
        lambda s, t: ["run", _recipe(t, f"kind: tiling\nname: t1\nbundle: lung\n"
                                        f"data: {s.lung}\ngrid: {{network_name: [unet]}}\n"
                                        "repeats: two\n"), *s.store_args],
        ("recipe.yaml", "repeats", "'two'", "repeats: 1"),
    ),
    "run-recipe-unknown-config-id": Case(
        lambda s, t: ["run", _recipe(t, f"kind: tiling\nname: t1\nbundle: lung\n"
                                        f"data: {s.lung}\ngrid: {{network_nam: [unet]}}\n"),
                      *s.store_args],
        ("recipe.yaml", "network_nam", "configs"),
    ),
    "run-recipe-override-of-wrong-type": Case(
        lambda s, t: ["run", _recipe(t, f"kind: tiling\nname: t1\nbundle: lung\n"
                                        f"data: {s.lung}\ngrid: {{network_name: [unet]}}\n"
                                        "overrides: {epochs: ten}\n"), *s.store_args],
        ("recipe.yaml", "epochs", "integer", "epochs: 250"),
    ),
    "run-out-of-another-study": Case(
        lambda s, t: ["run", _search_recipe(s, t), "--out", _existing(t / "report"),
                      *s.store_args],
        ("report", "not a report of this study", "--overwrite"),
        untouched="report",
    ),
    "search-storage-in-missing-folder": Case(
        lambda s, t: ["search", _search_recipe(s, t), "--storage",
                      f"sqlite:///{t / 'nosuch' / 'optuna.db'}", *s.store_args],
        ("nosuch/optuna.db", "does not exist", "create it"),
    ),
    "search-storage-unreachable": Case(
        lambda s, t: ["search", _search_recipe(s, t), "--storage",
                      "postgresql://127.0.0.1:9/studies", *s.store_args],
        ("postgresql://127.0.0.1:9/studies", "storage"),
    ),
    "search-of-a-tiling-recipe": Case(
        lambda s, t: ["search", _recipe(t, f"kind: tiling\nname: t1\nbundle: lung\n"
                                           f"data: {s.lung}\ngrid: {{network_name: [unet]}}\n"),
                      *s.store_args],
        ("recipe.yaml", "tiling recipe", "seglab run"),
    ),
}
# fmt: on


def _tree(root: Path) -> dict[str, tuple[int, int] | None]:
    """Files (size, mtime) and folders (None) under ``root``, without the command logs."""
    found: dict[str, tuple[int, int] | None] = {}
    for path in sorted(root.rglob("*")):
        if path.name.endswith(".log"):
            continue
        rel = str(path.relative_to(root))
        found[rel] = None if path.is_dir() else (path.stat().st_size, path.stat().st_mtime_ns)
    return found


def _run_count(store: Path) -> int:
    from seglab.tracking.store import resolve_store

    client = resolve_store(tracking_uri=f"sqlite:///{store / 'mlflow.db'}").client()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(experiments, max_results=1000)) if experiments else 0


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_in_one_line(name, shared, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    monkeypatch.chdir(tmp_path)  # default outputs (checkpoints/, mlruns/, studies/) land here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    argv = [str(a) for a in case.command(shared, tmp_path)]
    before = _tree(tmp_path)
    shared_before = _tree(shared.root / "lung") | _tree(shared.root / "sem")
    runs = _run_count(shared.store)

    code = main(argv)
    out, err = capsys.readouterr()

    assert code != 0, out
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line:\n{err}"
    line = err.rstrip("\n")
    assert line.startswith("seglab: error: ") and "internal error" not in line, line
    assert "Traceback" not in err + out
    for word in case.says:
        assert word.lower() in line.lower(), f"{word!r} missing from: {line}"
    after = _tree(tmp_path)
    assert sorted(set(after) - set(before)) == [], "left behind"
    if case.untouched:
        kept = {k: v for k, v in before.items() if k.startswith(case.untouched)}
        assert {k: v for k, v in after.items() if k.startswith(case.untouched)} == kept
    assert _tree(shared.root / "lung") | _tree(shared.root / "sem") == shared_before
    assert _run_count(shared.store) == runs, "an MLflow run was recorded"

    # --debug: the same error, raised with its traceback instead of the one line
    with pytest.raises(SeglabError) as raised:
        main(["--debug", *argv])
    assert f"seglab: error: {raised.value.message}" == line


def test_debug_prints_the_traceback_in_a_real_process(tmp_path):
    out = tmp_path / "sem"
    command = [sys.executable, "-m", "seglab.cli.app", "phantom", "sem", str(out)]
    bad = ["--shape", "0", "16", "16"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    plain = subprocess.run([*command, *bad], capture_output=True, text=True, env=env, cwd=tmp_path)
    debug = subprocess.run(
        [*command[:3], "--debug", *command[3:], *bad],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1
    assert "Traceback" not in plain.stderr
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "SeglabError: shape must be three integers >= 1" in debug.stderr
    assert not out.exists()


def test_the_corpus_covers_every_command_and_category():
    commands = {" ".join(n.split("-")[:1]) for n in CASES}
    assert {
        "phantom",
        "measure",
        "split",
        "morphometry",
        "segment",
        "evaluate",
        "train",
        "models",
        "run",
        "search",
    } <= commands
    assert len(CASES) >= 25


def test_a_bundle_name_is_seglabs_bundle_even_with_a_folder_of_that_name(tmp_path, monkeypatch):
    from seglab.workflows.training import REPO_BUNDLES, resolve_bundle

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lung" / "configs").mkdir(parents=True)
    assert resolve_bundle("lung") == (REPO_BUNDLES / "lung").resolve()
    with pytest.raises(SeglabError, match="not a bundle folder"):
        resolve_bundle("./lung")


def test_a_local_bundle_folder_needs_trust(tmp_path, monkeypatch):
    from seglab.workflows.training import REPO_BUNDLES, resolve_bundle

    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO_BUNDLES / "lung" / "configs", tmp_path / "mybundle" / "configs")
    with pytest.raises(SeglabError, match="--trust"):
        resolve_bundle("mybundle")
    assert resolve_bundle("./mybundle", trust=True) == (tmp_path / "mybundle").resolve()


def test_a_report_folder_of_the_same_study_is_reused_and_another_study_is_refused(tmp_path):
    from seglab.errors import OutputExistsError
    from seglab.studies.recipes import parse_recipe
    from seglab.studies.run import STUDY_MARKER, _claim_report_folder

    def recipe(name: str):
        return parse_recipe(
            {
                "kind": "tiling",
                "name": name,
                "bundle": "lung",
                "data": "d",
                "grid": {"network_name": ["unet"]},
            }
        )

    mine, other = recipe("a"), recipe("b")
    report = tmp_path / "report"
    report.mkdir()
    (report / "table2.csv").write_text("x\n")
    marker = {"study": mine.name, "digest": mine.digest, "kind": mine.kind}
    (report / STUDY_MARKER).write_text(json.dumps(marker))
    _claim_report_folder(report, mine, overwrite=False)  # resuming: its own report
    with pytest.raises(OutputExistsError, match="study 'a'"):
        _claim_report_folder(report, other, overwrite=False)
    assert (report / "table2.csv").exists()
    _claim_report_folder(report, other, overwrite=True)
    assert list(report.iterdir()) == []


# -- the checks behind the corpus, on their own ------------------------------------------------
@pytest.fixture(scope="module")
def lung_config():
    from monai.bundle import ConfigParser

    from seglab.workflows.training import REPO_BUNDLES

    config = ConfigParser()
    config.read_config(
        [str(REPO_BUNDLES / "lung" / "configs" / n) for n in ("common.json", "train.json")]
    )
    return config


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"epochs": 3, "learning_rate": 1, "momentum": 0},  # an integer where the default is 0.01
        {"initial_weights": "w.pt", "class_weights": [1, 2, 1, 1, 1, 1]},  # null defaults
        {"output_dir": "somewhere", "val_fraction": 0.0, "tracking_enabled": False},
        {"network_options#unet#channels": [4, 8], "run_tags": {"a": "b"}},
    ],
)
def test_overrides_of_the_defaults_types_pass(lung_config, overrides):
    from seglab.workflows.training import check_overrides

    check_overrides(lung_config, overrides, "lung")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"epoch": 3}, "unknown config id.*epoch in bundle lung"),
        ({"epochs": 2.5}, "epochs takes an integer .* got a number 2.5"),
        ({"epochs": True}, "epochs takes an integer"),
        ({"learning_rate": "fast"}, "learning_rate takes a number"),
        ({"network_name": 3}, "network_name takes text"),
        ({"tracking_enabled": "no"}, "tracking_enabled takes true or false"),
        ({"network_options#unet#strides": 2}, "takes a list"),
        ({"epochs": 0}, "epochs must be at least 1, got 0"),
        ({"learning_rate": 0.0}, "learning_rate must be greater than 0"),
        ({"val_fraction": 1.0}, "val_fraction must be at least 0 and less than 1"),
        ({"cache_rate": float("nan")}, "cache_rate must be between 0 and 1"),
    ],
)
def test_overrides_of_another_type_or_range_are_refused(lung_config, overrides, match):
    from seglab.workflows.training import check_overrides

    with pytest.raises(SeglabError, match=match):
        check_overrides(lung_config, overrides, "lung")


@pytest.mark.parametrize(
    ("item", "value"),
    [("epochs=3", 3), ("network_name=segnet", "segnet"), ("x=[1, 2]", [1, 2]), ("x=", "")],
)
def test_parse_overrides_reads_json_or_text(item, value):
    from seglab.workflows.training import parse_overrides

    assert parse_overrides([item]) == {item.split("=")[0]: value}
    assert parse_overrides([]) == {}


@pytest.mark.parametrize("item", ["epochs=[1", 'x={"a":', 'name="unterminated'])
def test_parse_overrides_refuses_broken_json(item):
    from seglab.workflows.training import parse_overrides

    with pytest.raises(SeglabError, match="is not valid JSON"):
        parse_overrides([item])


def test_check_samples_passes_a_good_dataset_and_an_empty_one(shared):
    from seglab.io.dataset import Dataset, check_samples, scan_dataset

    check_samples(scan_dataset(shared.lung), channels=3, require_foreground=True)
    check_samples(Dataset(shared.lung, ()), channels=3, require_foreground=True)


def test_check_samples_lists_every_image_with_the_wrong_channel_count(shared, tmp_path):
    from seglab.errors import DataFileError
    from seglab.io.dataset import check_samples, scan_dataset

    data = _lung_copy(shared, tmp_path, _grey_image)
    _to_rgba(data / "images" / "lung_2.png")
    with pytest.raises(DataFileError, match="2 image.*lung_1.png has 1, lung_2.png has 4"):
        check_samples(scan_dataset(data), channels=3)


def test_all_background_labels_pass_unless_foreground_is_required(shared, tmp_path):
    from seglab.errors import DataFileError
    from seglab.io.dataset import check_samples, scan_dataset

    dataset = scan_dataset(_lung_copy(shared, tmp_path, _background_labels))
    check_samples(dataset, channels=3)  # e.g. an evaluation set of empty fields
    with pytest.raises(DataFileError, match="every label .* is all background"):
        check_samples(dataset, channels=3, require_foreground=True)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("suffix", [".tif", ".nii.gz"])
def test_read_image_refuses_non_finite_pixels_and_says_where(tmp_path, bad, suffix):
    from seglab.errors import DataFileError

    pixels = np.ones((2, 3, 5), np.float32)  # a stack (Z, Y, X)
    pixels[1, 2, 0] = bad
    path = write_image(tmp_path / f"x{suffix}", pixels)
    with pytest.raises(DataFileError, match=r"1 NaN or infinite .* ZYX index \(1, 2, 0\)"):
        read_image(path)
    pixels[1, 2, 0] = 7.5  # finite floats read as before
    assert read_image(write_image(path, pixels)).array[1, 2, 0] == 7.5


@pytest.mark.parametrize(
    "content",
    [b"", b"not a torch file", bytes(range(256)) * 3, b"PK\x03\x04" + bytes(60)],
    ids=["empty", "text", "bytes", "cut-zip"],
)
def test_load_weights_refuses_damaged_files_without_torch_advice(tmp_path, content):
    from seglab.bundle.checkpoint import load_weights

    path = tmp_path / "w.pt"
    path.write_bytes(content)
    with pytest.raises(SeglabError, match="w.pt is corrupt") as raised:
        load_weights(path, "weights")
    assert "weights_only" not in raised.value.message and "\n" not in raised.value.message


def test_load_weights_reads_a_state_dict(tmp_path):
    import torch

    from seglab.bundle.checkpoint import load_weights

    torch.save({"w": torch.arange(3)}, tmp_path / "w.pt")
    assert load_weights(tmp_path / "w.pt")["w"].tolist() == [0, 1, 2]
    with pytest.raises(SeglabError, match="nosuch.pt not found"):
        load_weights(tmp_path / "nosuch.pt")


def test_an_earlier_training_is_kept_for_resume_and_emptied_only_with_overwrite(tmp_path):
    from seglab.errors import OutputExistsError
    from seglab.workflows.training import _check_output_folder

    out = _existing(tmp_path / "out")
    (out / "sub").mkdir()
    (out / "sub" / "model.pt").write_text("x")
    _check_output_folder(tmp_path / "new" / "out", resume=False, overwrite=False)  # creates none
    assert not (tmp_path / "new").exists()
    with pytest.raises(OutputExistsError, match="--resume .* --overwrite"):
        _check_output_folder(out, resume=False, overwrite=False)
    _check_output_folder(out, resume=True, overwrite=True)  # resuming: nothing removed
    assert (out / "keep.txt").exists()
    _check_output_folder(out, resume=False, overwrite=True)
    assert out.is_dir() and list(out.iterdir()) == []
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SeglabError, match="is not a folder"):
        _check_output_folder(tmp_path / "file", resume=False, overwrite=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_a_folder_without_write_permission_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code = main(["phantom", "lung", str(locked / "out"), "--size", "64", "--count", "1"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and str(locked) in err and "writ" in err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)
