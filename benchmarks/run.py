"""Run the benchmarks (``make bench``): B1-B4, a table, ``RESULTS.md`` and an MLflow run.

Usage::

    .venv/bin/python benchmarks/run.py [WORK] [--only B1,B2,B3,B4] [--quick] [--store mlruns]

Runs each benchmark script in its own process, in the order B4, B2, B1, B3 (B1 uses the model
B2 trains for its agreement figures), then

* prints a table of every figure against its target (``TARGETS``);
* rewrites the sections of ``benchmarks/RESULTS.md`` it ran (other sections stay) and
  ``benchmarks/results.json`` (every raw figure);
* logs the figures, the machine and both files to a run of the MLflow experiment
  ``benchmarks`` in the embedded store ``--store`` (``MLFLOW_TRACKING_URI`` wins).

``--quick`` shortens every benchmark (B1 3 rounds in one process; B2 4 images, 2 + 6 epochs;
B3 without the 690-slice run) to try the harness; its results say so. WORK (default
``/tmp/seglab-bench``, about 10 GB) keeps generated data between runs. Run on an otherwise
idle machine: every figure is a ratio within one run, but the absolute times are not.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS, describe, machine, run_child  # noqa: E402

RAW = HERE / "results.json"
#: A hand-written section of RESULTS.md (kept by every run, placed after the Targets table):
#: by how much and why a target is missed. Update it when the figures change.
MISSED = "Where the targets are missed"
ORDER = ("B4", "B2", "B1", "B3")


def _script(name: str) -> list[str]:
    return [sys.executable, str(HERE / name)]


# ------------------------------------------------------------------------------------ targets
def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """Rows (figure, measured, target, met) for the benchmarks that ran."""
    rows: list[tuple[str, str, str, bool]] = []
    if "B1" in results:
        paths = results["B1"]["paths"]
        seg = paths["seglab"]
        rows += [
            ("B1 fp32 speed-up over plain MONAI", f"x{seg['speedup_vs_plain']:.2f}", ">= x1.3",
             seg["speedup_vs_plain"] >= 1.3),
            ("B1 fp32 argmax agreement with plain MONAI, random weights",
             f"{seg['argmax_differing_pixels']} px differ", "0 px",
             seg["argmax_differing_pixels"] == 0),
            ("B1 fp32 time over the fp32 floor", f"x{seg['over_floor']:.2f}", "<= x2",
             seg["over_floor"] <= 2.0),
        ]  # fmt: skip
        trained = results["B1"].get("trained_agreement") or {}
        if "seglab" in trained:
            differing = trained["differing_pixels"]["seglab"]
            rows.append(
                (
                    "B1 fp32 argmax agreement with plain MONAI, trained model",
                    f"{differing} px differ",
                    "0 px",
                    differing == 0,
                )
            )
        bf16 = [name for name in paths if "bf16" in name]
        if bf16:
            best = min(bf16, key=lambda name: paths[name]["seconds_median"])
            rows.append((f"B1 bf16 time over the bf16 floor ({best})",
                         f"x{paths[best]['over_floor']:.2f}", "<= x1.3",
                         paths[best]["over_floor"] <= 1.3))  # fmt: skip
            if best in trained:
                rows.append((f"B1 bf16 argmax agreement, trained model ({best})",
                             f"{100 * trained[best]:.2f} %", ">= 99.5 %",
                             trained[best] >= 0.995))  # fmt: skip
    if "B2" in results:
        arm = results["B2"]["arms"]["seglab"]
        rows += [
            ("B2 data waiting, share of step time", f"{100 * arm['data_wait_share']:.1f} %",
             "<= 5 %", arm["data_wait_share"] <= 0.05),
            ("B2 training time over the floor", f"x{arm['over_floor']:.2f}", "<= x2",
             arm["over_floor"] <= 2.0),
        ]  # fmt: skip
    if "B3" in results:
        runs = results["B3"]["runs"]
        if "full" in runs:
            rows.append((f"B3 peak RSS at {results['B3']['slices']} slices",
                         f"{runs['full']['peak_rss_gib']:.2f} GiB", "<= 4 GiB",
                         runs["full"]["peak_rss_gib"] <= 4.0))  # fmt: skip
        speedup = runs["naive"]["wall_s"] / runs["chunked"]["wall_s"]
        rows.append((f"B3 speed-up over the naive path at {results['B3']['small']} slices",
                     f"x{speedup:.2f}", ">= x3", speedup >= 3.0))  # fmt: skip
    if "B4" in results:
        for name in ("seglab --help", "import seglab"):
            value = results["B4"]["commands"][name]["median_s"]
            rows.append((f"B4 `{name}`", f"{value:.3f} s", "<= 1 s", value <= 1.0))
    return rows


# ------------------------------------------------------------------------------------ sections
def _b1(r: dict[str, Any]) -> str:
    ceiling = r["ceiling"]
    lines = [
        "## B1 whole-image inference",
        "",
        f"One 1024 x 1024 3-channel lung phantom, the uniform-81 plan (81 tiles of 256 px), "
        f"MONAI UNet 16..256 with 2 residual units ({r['tile_gflop']:.2f} GFLOP per tile, "
        f"{r['image_gflop']:.1f} GFLOP per image), {r['threads']} torch threads. In each of "
        f"{r.get('processes', 1)} processes the paths were timed alternately, {r['rounds']} "
        "rounds; times are medians over the processes of their medians, speed-ups the median "
        "(and range) of the ratios within each process. "
        f"Convolution ceiling measured in the same run: fp32 {ceiling['float32']['gflops']:.0f}"
        + (f", bf16 {ceiling['bfloat16']['gflops']:.0f}" if "bfloat16" in ceiling else "")
        + " GFLOP/s (best 3x3 convolution of the U-Net's shapes).",
        "",
        "| path | s / image | GFLOP/s | floor (s) | x floor | speed-up vs plain (range) | "
        "argmax agreement (px differing) | first call (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in r["paths"].items():
        low, high = p.get("speedup_range", [p["speedup_vs_plain"]] * 2)
        lines.append(
            f"| {name} | {p['seconds_median']:.3f} | {p['gflops']:.0f} | {p['floor_s']:.3f} | "
            f"{p['over_floor']:.2f} | {p['speedup_vs_plain']:.2f} ({low:.2f}-{high:.2f}) | "
            f"{100 * p['argmax_agreement']:.4f} % ({p['argmax_differing_pixels']}) | "
            f"{p['first_call_s']:.1f} |"
        )
    trained = r.get("trained_agreement")
    if trained:
        agreement = ", ".join(
            f"{name} {100 * value:.3f} % ({trained['differing_pixels'][name]} px differ)"
            for name, value in trained.items()
            if name not in ("weights", "differing_pixels")
        )
        lines += [
            "",
            "Argmax agreement with plain MONAI fp32 on B2's trained model (another phantom): "
            f"{agreement}.",
        ]
    return "\n".join(lines) + "\n"


def _b2(r: dict[str, Any]) -> str:
    lines = [
        "## B2 training",
        "",
        f"The lung bundle trained by `train_bundle` on {r['images']} lung phantoms of 1024 px "
        "(16 random 256-px patches per image and step, U-Net 16..256, Adam), figures from "
        "`TrainingThroughput` as logged to MLflow, median of epochs 2.. . Floor: 3 x forward "
        "FLOPs per patch over the fp32 convolution ceiling of the same process.",
        "",
        "| arm | epochs | patches / s | data wait | step (s) | GFLOP/s | floor patches / s | "
        "x floor | train Dice, last epoch | val mean Dice | peak RSS (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, a in r["arms"].items():
        dice = a.get("val_mean_dice")
        lines.append(
            f"| {name} | {a['epochs']} | {a['patches_per_s']:.1f} | "
            f"{100 * a['data_wait_share']:.1f} % | {a['step_s']:.3f} | {a['gflops']:.0f} | "
            f"{a['floor_patches_per_s']:.1f} | {a['over_floor']:.2f} | "
            f"{a.get('last_train_mean_dice', float('nan')):.3f} | "
            f"{'-' if dice is None else f'{dice:.3f}'} | {a['process']['peak_rss_gib']:.2f} |"
        )
    base, seg = r["arms"]["baseline"], r["arms"]["seglab"]
    ratio = seg["patches_per_s"] / base["patches_per_s"]
    lines += ["", f"seglab / baseline patches per second: x{ratio:.2f}."]
    return "\n".join(lines) + "\n"


def _b3(r: dict[str, Any]) -> str:
    info = r["phantom"]
    z, y, x = info["shape"]
    runs = r["runs"]
    names = {
        "full": ("postprocess_stack (maps -> outputs), fast engine", r["slices"]),
        "naive": ("naive: split_instances + measure_objects, reference engine, whole volume",
                  r["small"]),
        "chunked": ("split_instances_chunked + measure_objects_chunked, fast engine",
                    r["small"]),
        "postprocess": ("postprocess_stack (maps -> outputs), fast engine", r["small"]),
    }  # fmt: skip
    lines = [
        "## B3 stack post-processing and morphometry",
        "",
        f"Ideal uint8 probability maps (first N slices) of the cell-B SEM phantom ({z} x {y} x "
        f"{x} voxels, {info['objects']} mitochondria), uncompressed TIFF read through memory "
        f"maps; slab {r['slab']}, meshes {r['meshes']}. Each step in its own child process "
        "(the seglab command's malloc settings, `OMP_NUM_THREADS=1`); peak RSS is its "
        "`ru_maxrss`.",
        "",
        "| step | slices | objects | wall (s) | CPU (s) | peak RSS (GiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, (name, slices) in names.items():
        if key in runs:
            run = runs[key]
            lines.append(
                f"| {name} | {slices} | {run['count']} | {run['wall_s']:.1f} | "
                f"{run['cpu_s']:.1f} | {run['peak_rss_gib']:.2f} |"
            )
    speedup = runs["naive"]["wall_s"] / runs["chunked"]["wall_s"]
    cpu = runs["naive"]["cpu_s"] / runs["chunked"]["cpu_s"]
    lines += [
        "",
        f"At {r['small']} slices the fast chunked path is x{speedup:.2f} as fast as the naive "
        f"one by wall time (x{cpu:.2f} by CPU time). Agreement: {r['agreement']['text']}.",
    ]
    if "full" in runs and runs["full"].get("phases_s"):
        phases = ", ".join(f"{k} {v:.1f}" for k, v in runs["full"]["phases_s"].items())
        lines.append(f"Phases of the {r['slices']}-slice run (s): {phases}.")
    return "\n".join(lines) + "\n"


def _b4(r: dict[str, Any]) -> str:
    lines = [
        "## B4 start-up",
        "",
        f"Median wall time of {r['runs']} fresh processes each (after a warm-up run); `seglab "
        "--help` is the console script, restart with the malloc settings included.",
        "",
        "| command | wall (s) |",
        "|---|---:|",
    ]
    for name, figure in r["commands"].items():
        lines.append(f"| `{name}` | {figure['median_s']:.3f} |")
    return "\n".join(lines) + "\n"


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "B1": ("B1 whole-image inference", _b1),
    "B2": ("B2 training", _b2),
    "B3": ("B3 stack post-processing and morphometry", _b3),
    "B4": ("B4 start-up", _b4),
}


# ------------------------------------------------------------------------------------ logging
def _flat(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        out[prefix] = float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            name = "".join(c if c.isalnum() or c in "_-./" else "_" for c in str(key))
            _flat(f"{prefix}.{name}" if prefix else name, item, out)


def log_to_mlflow(store: str, results: dict[str, Any], about: dict[str, Any], quick: bool) -> str:
    """Log every numeric figure, the machine and the result files; return the run id."""
    import mlflow

    from seglab.tracking.store import ensure_experiment, resolve_store

    tracking = resolve_store(store)
    mlflow.set_tracking_uri(tracking.tracking_uri)
    mlflow.set_experiment(experiment_id=ensure_experiment(tracking, "benchmarks"))
    metrics: dict[str, float] = {}
    _flat("", results, metrics)
    name = "bench-" + datetime.datetime.now().strftime("%Y%m%d-%H%M") + ("-quick" if quick else "")
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params({f"machine.{k}": str(v)[:250] for k, v in about.items()})
        mlflow.log_param("quick", quick)
        mlflow.log_param("benchmarks", ",".join(sorted(results)))
        mlflow.log_metrics({k: v for k, v in metrics.items() if not k.endswith("_all")})
        for figure, measured, target, met in targets(results):
            key = "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in figure)
            verdict = "met" if met else "missed"
            mlflow.set_tag(f"target.{key[:200]}", f"{measured} ({target}): {verdict}")
        mlflow.log_artifact(str(RESULTS))
        mlflow.log_artifact(str(RAW))
        return run.info.run_id


def write_results(header: str, new: dict[str, str]) -> None:
    """Write RESULTS.md: the header, Targets and B1-B4 (new, else kept), then other sections."""
    old: dict[str, str] = {}
    if RESULTS.is_file():
        for part in RESULTS.read_text().split("\n## ")[1:]:
            title = part.split("\n", 1)[0].strip()
            old[title] = "## " + part.rstrip("\n") + "\n"
    ordered = ["Targets", MISSED, *(title for title, _ in SECTIONS.values())]
    sections = {title: new.get(title, old.get(title)) for title in ordered}
    sections |= {title: text for title, text in old.items() if title not in sections}
    text = header + "".join("\n" + part for part in sections.values() if part)
    temporary = RESULTS.with_suffix(".md.tmp")
    temporary.write_text(text)
    temporary.replace(RESULTS)


# ------------------------------------------------------------------------------------ main
def main() -> None:
    """Run the chosen benchmarks, print the table, write the results, log the run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("work", nargs="?", default="/tmp/seglab-bench", type=Path)
    parser.add_argument("--only", default=",".join(ORDER), help="e.g. B1,B4")
    parser.add_argument("--quick", action="store_true", help="short settings, to try it out")
    parser.add_argument("--store", default="mlruns", help="embedded MLflow store folder")
    args = parser.parse_args()
    chosen = [b for b in ORDER if b in {s.strip().upper() for s in args.only.split(",")}]
    if not chosen:
        raise SystemExit(f"--only names none of {', '.join(ORDER)}")
    about = machine()
    print(f"machine: {describe(about)}", flush=True)
    previous = json.loads(RAW.read_text()) if RAW.is_file() else {}
    results: dict[str, Any] = {}
    for bench in chosen:
        print(f"== {bench}", flush=True)
        if bench == "B4":
            command = _script("b4_startup.py") + (["--runs", "5"] if args.quick else [])
        elif bench == "B2":
            command = _script("b2_training.py") + [str(args.work)]
            if args.quick:
                command += ["--images", "4", "--baseline-epochs", "2", "--epochs", "6"]
        elif bench == "B1":
            command = _script("b1_inference.py")
            command += ["--rounds", "3", "--processes", "1"] if args.quick else []
            trained = (results.get("B2") or previous.get("B2") or {}).get("arms", {})
            weights = trained.get("seglab", {}).get("weights")
            if weights and Path(weights).is_file():  # this run's B2 model, else the last one's
                command += ["--trained", weights]
        else:
            command = _script("b3_postprocess.py") + [str(args.work)]
            command += ["--skip-full"] if args.quick else []
        results[bench] = run_child(command, label=f"{bench} ")
    about_text = describe(about) + (" (--quick: shortened settings)" if args.quick else "")
    header = (
        "# Benchmark results\n\n"
        f"Written by `make bench` (`benchmarks/run.py`) on "
        f"{datetime.date.today().isoformat()}. Machine: {about_text}. Raw figures: "
        "`benchmarks/results.json`; the same figures are logged to the MLflow experiment "
        "`benchmarks`.\n"
    )
    merged = {k: v for k, v in (previous | results).items() if k in ORDER}
    rows = targets(merged)  # benchmarks not run now keep their last figures (and sections)
    table = ["## Targets", "", "| figure | measured | target | met |", "|---|---:|---:|---|"]
    table += [f"| {f} | {m} | {t} | {'yes' if ok else 'NO'} |" for f, m, t, ok in rows]
    new = {"Targets": "\n".join(table) + "\n"}
    new |= {SECTIONS[b][0]: SECTIONS[b][1](results[b]) for b in chosen}
    write_results(header, new)
    RAW.write_text(json.dumps(merged | {"machine": about, "quick": args.quick}, indent=1))
    run_id = log_to_mlflow(args.store, results, about, args.quick)
    width = max(len(f) for f, *_ in rows) if rows else 10
    print()
    for figure, measured, target, met in rows:
        print(f"{figure:<{width}}  {measured:>14}  {target:>9}  {'met' if met else 'MISSED'}")
    print(f"\nwritten: {RESULTS}, {RAW}; MLflow run {run_id} in experiment 'benchmarks'")


if __name__ == "__main__":
    main()
