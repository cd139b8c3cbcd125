"""B3: stack post-processing and morphometry at study B's full size (690 x 1024 x 1024).

Usage::

    .venv/bin/python benchmarks/b3_postprocess.py [WORK] [--slices 690] [--small 128]
        [--slab 64] [--meshes ply] [--skip-full]

WORK (default ``/tmp/seglab-bench``) keeps the generated cell-B SEM phantom's ideal probability
maps (``maps/object.tif``: 255 inside mitochondria, ``maps/contour.tif``: 255 on their per-slice
outlines; uint8, uncompressed, written slab by slab) and is reused by later runs.

Then, each in its own child process (with the seglab command's malloc settings and one OpenMP
thread) whose wall time and peak RSS (``os.wait4`` rusage, i.e. ``ru_maxrss`` of that child
alone) are recorded:

1. ``full``: :func:`seglab.workflows.morphometry.postprocess_stack` on the whole stack (maps ->
   labels.tif, instances.csv, summary.json, figures, meshes), streaming from the TIFF memmaps;
2. ``naive``: ``split_instances`` + ``measure_objects`` with ``engine="reference"`` (the plain
   scipy/scikit-image primitives) on in-memory arrays of the first ``--small`` slices (the
   whole-volume path);
3. ``chunked``: ``split_instances_chunked`` (labels into a memmap) + ``measure_objects_chunked``
   (from that memmap) with the default ``engine="fast"`` (the product's path) on the same
   slices, read from TIFF memmaps; the two must agree (checked: the same objects, voxel counts,
   boxes and border flags, volumes equal, surface areas within 1e-6 relative, other lengths
   within 1e-7 of the object's size);
4. ``postprocess``: ``postprocess_stack`` on the same slices (everything written).

``--skip-full`` leaves out step 1 (a short run at ``--small`` slices).

Prints progress and, last, one JSON line read by ``benchmarks/run.py`` (which writes
``RESULTS.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, run_child  # noqa: E402

CHILD_FLAG = "--child"


# --------------------------------------------------------------------------------------------
# Preparation
# --------------------------------------------------------------------------------------------


def prepare(work: Path, slab: int) -> dict:
    """Generate the cell-B phantom and its ideal maps once; return its description."""
    maps = work / "maps"
    info_path = maps / "phantom.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    from seglab.io.images import write_image
    from seglab.phantoms.sem import make_sem_phantom, study_sem_config

    maps.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    phantom = make_sem_phantom(study_sem_config("B"))
    generated = time.perf_counter() - start
    shape = phantom.instances.shape
    spacing = phantom.voxel_size
    # uint8 maps filled slab by slab (no float or int64 copy of the stack).
    for name, source in (("object", phantom.instances), ("contour", phantom.contours)):
        target = np.lib.format.open_memmap(
            maps / f"{name}.npy", mode="w+", dtype=np.uint8, shape=shape
        )
        for z in range(0, shape[0], slab):
            part = source[z : z + slab]
            target[z : z + slab] = np.where(part > 0, np.uint8(255), np.uint8(0))
        target.flush()
        write_image(maps / f"{name}.tif", target, spacing, axes="ZYX")
        del target
        (maps / f"{name}.npy").unlink()
    info = {
        "shape": [int(n) for n in shape],
        "voxel_size_um": [float(v) for v in spacing],
        "objects": len(phantom.truth),
        "objects_interior": sum(not t.touches_border for t in phantom.truth),
        "myofibril_axis": [float(v) for v in phantom.metadata["myofibril_axis"]],
        "generation_s": round(generated, 1),
    }
    del phantom
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return info


def crop_maps(work: Path, slices: int, slab: int) -> Path:
    """The first ``slices`` slices of both maps as TIFFs in ``work/maps_<slices>``."""
    from seglab.io.images import read_stack_memmap, write_image

    folder = work / f"maps_{slices}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("object", "contour"):
        target = folder / f"{name}.tif"
        if not target.is_file():
            source = read_stack_memmap(work / "maps" / f"{name}.tif")
            part = np.array(source.array[:slices])
            write_image(target, part, source.spacing, axes="ZYX")
    return folder


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------


def child(task: str, maps: str, out: str, slab: int, meshes: str) -> None:
    """Run one measured task (in a child process) and print its JSON result on the last line."""
    from seglab.instances import split_instances, split_instances_chunked
    from seglab.io.images import read_image, read_stack_memmap
    from seglab.morphometry import measure_objects, measure_objects_chunked
    from seglab.workflows.morphometry import postprocess_stack

    folder = Path(maps)
    info = json.loads((Path(maps).parent / "maps" / "phantom.json").read_text())
    voxel = info["voxel_size_um"]
    axis = info["myofibril_axis"]
    result: dict = {}
    if task == "postprocess":
        done = postprocess_stack(
            folder / "object.tif",
            folder / "contour.tif",
            voxel,
            out,
            axis=axis,
            meshes=meshes,
            slab=slab,
            overwrite=True,
        )
        result["count"] = done.values["count"]
        result["count_interior"] = done.values["count_interior"]
        result["phases_s"] = done.timings_s
    elif task == "naive":
        objects = read_image(folder / "object.tif").array
        contours = read_image(folder / "contour.tif").array
        split = split_instances(objects, contours, engine="reference")
        del objects, contours
        measured = measure_objects(split.labels, voxel, axis, engine="reference")
        result["count"] = len(measured)
        np.save(Path(out) / "naive.npy", _table(measured))
    elif task == "chunked":
        objects = read_stack_memmap(folder / "object.tif").array
        contours = read_stack_memmap(folder / "contour.tif").array
        labels = np.lib.format.open_memmap(
            Path(out) / "labels.npy", mode="w+", dtype=np.uint32, shape=objects.shape
        )
        split_instances_chunked(objects, contours, slab=slab, out=labels)
        measured = measure_objects_chunked(labels, voxel, axis, slab=slab)
        result["count"] = len(measured)
        np.save(Path(out) / "chunked.npy", _table(measured))
        del labels
        (Path(out) / "labels.npy").unlink()
    else:
        raise SystemExit(f"unknown task {task}")
    emit(result)


def _table(measured: list) -> np.ndarray:
    """Every float of the measurements, for an exact comparison."""
    return np.array(
        [
            (
                m.label,
                m.voxel_count,
                m.volume_um3,
                m.surface_um2,
                *m.centroid_um,
                *m.bbox,
                *m.semi_axes_um,
                m.semi_major_um,
                m.semi_minor_um,
                m.eccentricity,
                *m.major_axis,
                m.orientation_deg,
                m.touches_border,
            )
            for m in measured
        ],
        dtype=np.float64,
    ).reshape(len(measured), -1)


#: Columns of :func:`_table`: exact ones (integers, flags, volumes) and length ones.
_EXACT_COLUMNS = [0, 1, 2, *range(7, 13), 23]
_SURFACE_COLUMN = 3
_LENGTH_COLUMNS = [4, 5, 6, 13, 14, 15, 16]
_MINOR_COLUMN = 17  # sqrt(b2 b3): compared squared (a zero variance's rounding noise)


def compare_tables(naive: np.ndarray, chunked: np.ndarray) -> dict:
    """Agreement of the reference and fast measurements (the bounds of the engines' tests)."""
    if naive.shape != chunked.shape:
        return {"ok": False, "text": f"tables of shape {naive.shape} vs {chunked.shape}"}
    exact = np.array_equal(naive[:, _EXACT_COLUMNS], chunked[:, _EXACT_COLUMNS])
    size = np.nanmax(naive[:, 13:16], axis=1)  # the largest semi-axis, um

    def worst(values: np.ndarray) -> float:
        return float(np.nanmax(values)) if np.isfinite(values).any() else 0.0

    surface = worst(np.abs(chunked[:, _SURFACE_COLUMN] / naive[:, _SURFACE_COLUMN] - 1))
    lengths = worst(
        np.abs(chunked[:, _LENGTH_COLUMNS] - naive[:, _LENGTH_COLUMNS]) / size[:, np.newaxis]
    )
    minor = worst(np.abs(chunked[:, _MINOR_COLUMN] ** 2 - naive[:, _MINOR_COLUMN] ** 2) / size**2)
    ok = exact and surface <= 1e-6 and lengths <= 1e-7 and minor <= 1e-8
    text = (
        f"{len(naive)} objects, labels/voxel counts/boxes/border flags/volumes identical: "
        f"{exact}; largest relative surface difference {surface:.1e}; largest centroid/"
        f"semi-axis difference {lengths:.1e} of the largest semi-axis (semi-minor squared: "
        f"{minor:.1e})"
    )
    return {"ok": ok, "text": text}


def measure_child(task: str, maps: Path, out: Path, slab: int, meshes: str) -> dict:
    """Run a task in a child process; return its result with wall time, CPU and peak RSS.

    The child gets the seglab command's malloc settings (:mod:`seglab.allocator`) and one
    OpenMP thread, whichever engine it runs.
    """
    from seglab.allocator import ALLOCATOR_SETTINGS, MARKER

    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        CHILD_FLAG,
        task,
        str(maps),
        str(out),
        str(slab),
        meshes,
    ]
    env = {**os.environ, **ALLOCATOR_SETTINGS, MARKER: "tuned", "OMP_NUM_THREADS": "1"}
    result = run_child(command, env=env, label=f"{task}: ")
    process = result.pop("process")
    result.update(
        task=task,
        wall_s=process["wall_s"],
        cpu_s=process["cpu_s"],
        peak_rss_gib=process["peak_rss_gib"],
    )
    return result


def main() -> None:
    """Prepare, run the measured tasks, print the JSON result (last line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("work", nargs="?", default="/tmp/seglab-bench", type=Path)
    parser.add_argument("--slices", type=int, default=690, help="slices of the full run")
    parser.add_argument("--small", type=int, default=128, help="slices of naive vs chunked")
    parser.add_argument("--slab", type=int, default=64)
    parser.add_argument("--meshes", default="ply", choices=["ply", "obj", "stl", "none"])
    parser.add_argument("--skip-full", action="store_true", help="leave out the full run")
    args = parser.parse_args()
    work: Path = args.work
    start = time.perf_counter()
    info = prepare(work, args.slab)
    print(f"maps ready in {time.perf_counter() - start:.0f} s", flush=True)
    full_maps = (
        work / "maps"
        if args.slices >= info["shape"][0]
        else crop_maps(work, args.slices, args.slab)
    )
    small_maps = crop_maps(work, args.small, args.slab)
    runs = {}
    steps = [
        ("naive", small_maps, work / "naive", "none"),
        ("chunked", small_maps, work / "chunked", "none"),
        ("postprocess", small_maps, work / f"out_{args.small}", args.meshes),
    ]
    if not args.skip_full:
        steps.insert(0, ("full", full_maps, work / f"out_{args.slices}", args.meshes))
    for name, maps, out, meshes in steps:
        task = "postprocess" if name == "full" else name
        print(f"{name}: {task} on {maps.name}", flush=True)
        runs[name] = measure_child(task, maps, out, args.slab, meshes)
        print(
            f"{name}: {runs[name]['wall_s']:.1f} s, {runs[name]['peak_rss_gib']:.2f} GiB",
            flush=True,
        )
    naive = np.load(work / "naive" / "naive.npy")
    chunked = np.load(work / "chunked" / "chunked.npy")
    agreement = compare_tables(naive, chunked)
    if not agreement["ok"]:
        raise SystemExit(f"chunked and naive measurements disagree: {agreement['text']}")
    emit(
        {
            "benchmark": "B3",
            "phantom": info,
            "slices": args.slices,
            "small": args.small,
            "slab": args.slab,
            "meshes": args.meshes,
            "runs": runs,
            "agreement": agreement,
        }
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        child(*sys.argv[2:5], int(sys.argv[5]), sys.argv[6])
    else:
        main()
