"""B2: training throughput of the lung bundle: patches per second, data waiting, the floor.

Usage::

    .venv/bin/python benchmarks/b2_training.py [WORK] [--images 8] [--baseline-epochs 5]
        [--epochs 40]

Writes ``--images`` lung phantoms of 1024 x 1024 px once (``WORK/b2/data-<images>``), then
trains the lung bundle (``seglab.workflows.training.train_bundle``, the path of ``seglab
train``: MONAI's ``SupervisedTrainer``, ``CacheDataset``, 16 random 256-px uniform-81 patches
per image with random D4 flips and rotations, the U-Net 16..256 with 2 residual units, Adam)
twice, each in its own child process with the seglab command's malloc settings:

``baseline``
    ``compile=off``: the bundle's trainer as plain MONAI runs it (eager), ``--baseline-epochs``.
``seglab``
    the bundle's default ``compile=auto``, which compiles a run of this length, ``--epochs``.
    Its final weights are the trained model B1 uses for its agreement figures.

Validation runs once, after the last epoch (``val_interval`` = epochs), so the epochs are all
training. The figures come from :class:`seglab.bundle.TrainingThroughput` as logged to MLflow
per epoch (``train_patches_per_s``, ``train_data_wait_share``, ``train_step_s``); the steady
state is the median over epochs 2.. (epoch 1 holds warm-up and compilation). The floor is
3 x the forward FLOPs per patch (forward + backward) over the fp32 3x3-convolution ceiling
measured in the same child.

Prints progress and, last, one JSON line read by ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import UNET_OPTIONS, conv_ceiling, emit, run_child  # noqa: E402

CHILD_FLAG = "--child"
PATCH = 256


def child(arm: str, work: Path, data: Path, epochs: int) -> None:
    """Train one arm in this process; print its figures as JSON."""
    from seglab.networks.factory import build_network
    from seglab.networks.profile import forward_flops
    from seglab.tracking.store import resolve_store
    from seglab.workflows.training import train_bundle

    ceiling = conv_ceiling("float32")
    patch_flops = 3 * forward_flops(build_network("unet", 3, 6, UNET_OPTIONS), (1, 3, PATCH, PATCH))
    store = work / "mlruns"
    start = time.perf_counter()
    outcome = train_bundle(
        "lung",
        data,
        overrides={
            "epochs": epochs,
            "val_interval": epochs,
            "compile": "off" if arm == "baseline" else "auto",
            "optimizer_name": "adam",
            "learning_rate": 0.001,
            "experiment_name": "b2-training",
            "show_progress": False,
        },
        store_dir=store,
        output_dir=work / arm,
        quiet=True,
    )
    wall = time.perf_counter() - start
    client = resolve_store(store).client()
    history = {}
    for key in ("train_patches_per_s", "train_data_wait_share", "train_step_s", "train_mean_dice"):
        logged = client.get_metric_history(outcome.run_id, key)
        history[key] = [m.value for m in sorted(logged, key=lambda m: m.step)]
    steady = {key: statistics.median(values[1:] or values) for key, values in history.items()}
    patches_per_s = steady["train_patches_per_s"]
    floor_per_patch = patch_flops / (ceiling["gflops"] * 1e9)
    emit(
        {
            "arm": arm,
            "epochs": epochs,
            "wall_s": wall,
            "run_id": outcome.run_id,
            "history": history,
            "patches_per_s": patches_per_s,
            "data_wait_share": steady["train_data_wait_share"],
            "step_s": steady["train_step_s"],
            "patch_gflop": patch_flops / 1e9,
            "ceiling": ceiling,
            "floor_patches_per_s": 1 / floor_per_patch,
            "over_floor": (1 / patches_per_s) / floor_per_patch,
            "gflops": patches_per_s * patch_flops / 1e9,
            # the final evaluation of the logged model on the validation images
            "val_mean_dice": outcome.metrics.get("mean_dice"),
            "val_total_dice": outcome.metrics.get("total_dice"),
            "last_train_mean_dice": history["train_mean_dice"][-1],
            "weights": str(work / arm / "model.pt"),
        }
    )


def main() -> None:
    """Write the data, train both arms in child processes, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("work", nargs="?", default="/tmp/seglab-bench", type=Path)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--baseline-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    work = args.work / "b2"
    data = work / f"data-{args.images}"
    if not (data / "classes.json").is_file():
        from seglab.workflows.phantoms import write_lung_phantoms

        print(f"writing {args.images} lung phantoms of 1024 px to {data}", flush=True)
        write_lung_phantoms(data, count=args.images, size=1024, seed=0, overwrite=True)
    from seglab.allocator import ALLOCATOR_SETTINGS

    env = {**os.environ, **ALLOCATOR_SETTINGS, "SEGLAB_ALLOCATOR": "tuned"}
    arms = {}
    for arm, epochs in (("baseline", args.baseline_epochs), ("seglab", args.epochs)):
        print(f"training {arm} ({epochs} epochs)", flush=True)
        command = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, arm, str(work)]
        command.append(str(data))
        arms[arm] = run_child([*command, str(epochs)], env=env, label=f"{arm}: ")
        print(
            f"{arm}: {arms[arm]['patches_per_s']:.1f} patches/s, data wait "
            f"{100 * arms[arm]['data_wait_share']:.1f} %, x{arms[arm]['over_floor']:.2f} floor",
            flush=True,
        )
    emit({"benchmark": "B2", "images": args.images, "arms": arms})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
