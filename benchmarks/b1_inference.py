"""B1: whole-image inference of a 1024 x 1024 3-channel image, seglab against plain MONAI.

Usage::

    .venv/bin/python benchmarks/b1_inference.py [--rounds 7] [--processes 3] [--trained WEIGHTS]
        [--quick]

In each of ``--processes`` processes, one after the other (the plain path's speed differed by
up to 25 % from one process to the next on these machines), with the same U-Net weights (the
lung bundle's network: MONAI UNet, channels 16..256, 2 residual units; random weights, seed 0)
and the same uniform-81 plan (256 px tiles, stride 128, 128 px mirror padding: 9 x 9 = 81
windows), these paths are timed alternately, one image per path per round, after a warm-up
call each:

``plain MONAI``
    ``monai.inferers.sliding_window_inference(padded, (256, 256), sw_batch_size=1, predictor,
    overlap=0.5)`` under ``torch.no_grad()``: MONAI's defaults (one window per forward pass,
    constant weighting) on the image mirror-padded by the plan's 128 px, then cropped. Its
    windows are exactly the plan's 81 tiles.
``seglab``
    :class:`seglab.bundle.TilingInferer` as the bundles configure it (uniform-81, 16 tiles per
    batch) with ``compile="on"``: the steady state that ``compile="auto"`` reaches after
    1024 tiles (the compilation time is reported separately).
``seglab eager``
    The same with ``compile="off"`` (what the compilation buys).
``seglab bf16``, ``seglab bf16 eager``
    ``precision="bfloat16"`` (opt-in), compiled and eager.

Every process runs with the seglab command's malloc settings (:mod:`seglab.allocator`), which
both paths then share. The machine's 3x3-convolution ceiling (fp32 and bf16) is measured in the
same process; the floor is the network's FLOPs over 81 tiles divided by the ceiling. The
speed-up is taken within each process and the median over processes reported. Argmax agreement
is against
plain MONAI's fp32 output, on the random-weight network and, with ``--trained``, on trained
weights (a ``model.pt`` state dict of the same network, e.g. the one B2 trains).

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

from common import UNET_OPTIONS, alternate, conv_ceiling, emit, run_child  # noqa: E402

CHILD_FLAG = "--child"

TILE = 256
PADDING = 128
SIZE = 1024
PRESET = "uniform-81"


def lung_image(seed: int = 0):  # noqa: ANN201 (torch imported lazily)
    """A 1024 x 1024 lung phantom as the bundle feeds it: (1, 3, H, W) float32 in 0..1."""
    import numpy as np
    import torch

    from seglab.phantoms.lung import LungPhantomConfig, make_lung_phantom

    phantom = make_lung_phantom(LungPhantomConfig(size=SIZE, seed=seed))
    image = np.moveaxis(phantom.image, -1, 0).astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(image[None]))


def measure(args: argparse.Namespace) -> None:
    """Measure in this process (a child); the last line printed is the JSON result."""
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from seglab.bundle import TilingInferer
    from seglab.networks.factory import build_network
    from seglab.networks.profile import forward_flops

    torch.manual_seed(0)
    network = build_network("unet", 3, 6, UNET_OPTIONS).eval()
    image = lung_image()
    tile_flops = forward_flops(network, (1, 3, TILE, TILE))
    flops = 81 * tile_flops

    def plain() -> torch.Tensor:
        padded = torch.nn.functional.pad(image, (PADDING,) * 4, mode="reflect")
        with torch.no_grad():
            out = sliding_window_inference(padded, (TILE, TILE), 1, network, overlap=0.5)
        return out[..., PADDING : PADDING + SIZE, PADDING : PADDING + SIZE]

    inferers = {
        "seglab": TilingInferer(PRESET, compile="on"),
        "seglab eager": TilingInferer(PRESET, compile="off"),
        "seglab bf16": TilingInferer(PRESET, compile="on", precision="bfloat16"),
        "seglab bf16 eager": TilingInferer(PRESET, compile="off", precision="bfloat16"),
    }
    if args.quick:
        inferers = {"seglab": inferers["seglab"]}
    paths = {"plain MONAI": plain} | {
        name: (lambda inferer=inferer: inferer(image, network))
        for name, inferer in inferers.items()
    }

    print("ceiling: timing 3x3 convolutions", flush=True)
    ceiling = {"float32": conv_ceiling("float32")}
    if not args.quick:
        ceiling["bfloat16"] = conv_ceiling("bfloat16")

    first_call = {}
    outputs = {}
    for name, call in paths.items():
        start = time.perf_counter()
        outputs[name] = call().argmax(1)
        first_call[name] = time.perf_counter() - start
        print(f"warm-up {name}: {first_call[name]:.1f} s", flush=True)

    times = alternate(paths, args.rounds)
    reference = outputs["plain MONAI"]
    plain_s = statistics.median(times["plain MONAI"])
    rows = {}
    for name, values in times.items():
        seconds = statistics.median(values)
        dtype = "bfloat16" if "bf16" in name else "float32"
        floor = flops / (ceiling[dtype]["gflops"] * 1e9)
        rows[name] = {
            "seconds_median": seconds,
            "seconds_min": min(values),
            "seconds_all": values,
            "gflops": flops / seconds / 1e9,
            "floor_s": floor,
            "over_floor": seconds / floor,
            "speedup_vs_plain": plain_s / seconds,
            "argmax_agreement": float((outputs[name] == reference).float().mean()),
            "argmax_differing_pixels": int((outputs[name] != reference).sum()),
            "first_call_s": first_call[name],
            "compile_s": max(0.0, first_call[name] - seconds)
            if name in inferers and inferers[name].runner.compile == "on"
            else 0.0,
        }

    trained = None
    if args.trained is not None:
        state = torch.load(args.trained, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
        network.load_state_dict(state)
        network.eval()
        test_image = lung_image(seed=1)
        image = test_image  # the paths read `image`
        reference_trained = plain().argmax(1)
        trained = {"weights": str(args.trained), "differing_pixels": {}}
        for name in inferers:
            predicted = paths[name]().argmax(1)
            trained[name] = float((predicted == reference_trained).float().mean())
            trained["differing_pixels"][name] = int((predicted != reference_trained).sum())

    emit(
        {
            "benchmark": "B1",
            "image": [1, 3, SIZE, SIZE],
            "preset": PRESET,
            "tiles": 81,
            "tile_gflop": tile_flops / 1e9,
            "image_gflop": flops / 1e9,
            "threads": torch.get_num_threads(),
            "ceiling": ceiling,
            "rounds": args.rounds,
            "paths": rows,
            "trained_agreement": trained,
            "numpy": np.__version__,
            "torch": torch.__version__,
        }
    )


def combine(children: list[dict]) -> dict:
    """One result from several processes: medians over processes of their medians and ratios.

    The speed-up is taken within each process (its paths alternate there) and the median of
    those ratios reported, with their range; agreement figures are the worst process's.
    """
    first = children[0]
    rows = {}
    for name in first["paths"]:
        per = [child["paths"][name] for child in children]
        seconds = statistics.median(row["seconds_median"] for row in per)
        speedups = [row["speedup_vs_plain"] for row in per]
        rows[name] = {
            "seconds_median": seconds,
            "seconds_per_process": [row["seconds_median"] for row in per],
            "seconds_all": [value for row in per for value in row["seconds_all"]],
            "gflops": first["image_gflop"] / seconds,
            "floor_s": statistics.median(row["floor_s"] for row in per),
            "over_floor": statistics.median(row["over_floor"] for row in per),
            "speedup_vs_plain": statistics.median(speedups),
            "speedup_range": [min(speedups), max(speedups)],
            "argmax_agreement": min(row["argmax_agreement"] for row in per),
            "argmax_differing_pixels": max(row["argmax_differing_pixels"] for row in per),
            "first_call_s": statistics.median(row["first_call_s"] for row in per),
            "compile_s": statistics.median(row["compile_s"] for row in per),
        }
    ceilings = {
        dtype: {"gflops": statistics.median(c["ceiling"][dtype]["gflops"] for c in children)}
        for dtype in first["ceiling"]
    }
    return first | {
        "processes": len(children),
        "paths": rows,
        "ceiling": ceilings,
        "ceiling_per_process": [c["ceiling"] for c in children],
    }


def main() -> None:
    """Measure in ``--processes`` child processes one after the other; print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternations per process")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--trained", type=Path, help="state dict of the same U-Net")
    parser.add_argument("--quick", action="store_true", help="plain MONAI and seglab only")
    parser.add_argument(CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args)
        return
    from seglab.allocator import ALLOCATOR_SETTINGS, MARKER

    # the process settings of the seglab command (both paths run under them)
    env = {**os.environ, **ALLOCATOR_SETTINGS, MARKER: "tuned"}
    children = []
    for index in range(args.processes):
        command = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG]
        command += ["--rounds", str(args.rounds)] + (["--quick"] if args.quick else [])
        if args.trained is not None and index == 0:
            command += ["--trained", str(args.trained)]
        print(f"process {index + 1}/{args.processes}", flush=True)
        result = run_child(command, env=env, label=f"{index + 1}: ")
        result.pop("process")
        children.append(result)
    emit(combine(children))


if __name__ == "__main__":
    main()
