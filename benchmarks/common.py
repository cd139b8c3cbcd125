"""Shared pieces of the benchmarks: the machine, its convolution ceiling, timing, RESULTS.md.

Not a test helper and not part of the package: ``benchmarks/*.py`` import it as a sibling
module (each script puts its own folder first on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

#: The U-Net of B1 and B2 (the lung bundle's default network): MONAI UNet, channels 16..256,
#: strides 2, 2 residual units, 3 input channels, 6 classes.
UNET_OPTIONS = {
    "unet": {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2}
}


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, Python and torch versions, load average now."""
    with open("/proc/meminfo") as fh:
        total_kb = int(fh.readline().split()[1])
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(total_kb / 2**20),
        "cpu": model,
        "python": platform.python_version(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def describe(about: Mapping[str, Any]) -> str:
    """One line for RESULTS.md from :func:`machine`'s dict."""
    load = ", ".join(f"{v:.2f}" for v in about["load_average"])
    return (
        f"{about['cores']} cores ({about['cpu']}), {about['memory_gib']} GiB RAM, "
        f"Python {about['python']}, load average before the run {load}"
    )


def conv_flops(batch: int, channels: int, size: int) -> int:
    """FLOPs of a 3x3 same-padded convolution of ``channels`` -> ``channels`` maps."""
    return 2 * batch * channels * channels * 9 * size * size


def conv_ceiling(dtype: str = "float32", repeats: int = 5) -> dict[str, float]:
    """The machine's best 3x3 convolution throughput in GFLOP/s, measured now.

    The shapes are the U-Net's (16 to 256 channels at 256 to 16 px), in both memory formats,
    each timed ``repeats`` times after a warm-up; the ceiling is the best median. ``dtype``
    ``"bfloat16"`` runs them under CPU autocast.
    """
    import torch

    shapes = [(8, 16, 256), (8, 64, 128), (8, 128, 64), (8, 256, 32)]
    best: dict[str, float] = {}
    with (
        torch.inference_mode(),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"),
    ):
        for batch, channels, size in shapes:
            for layout in ("nchw", "channels_last"):
                conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval()
                x = torch.randn(batch, channels, size, size)
                if layout == "channels_last":
                    conv = conv.to(memory_format=torch.channels_last)
                    x = x.contiguous(memory_format=torch.channels_last)
                conv(x)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    conv(x)
                    times.append(time.perf_counter() - start)
                rate = conv_flops(batch, channels, size) / statistics.median(times) / 1e9
                best[f"{channels}ch_{size}px_{layout}"] = round(rate, 1)
    return {"gflops": max(best.values()), "shapes": best}  # type: ignore[dict-item]


def alternate(
    paths: Mapping[str, Callable[[], Any]], rounds: int, progress: bool = True
) -> dict[str, list[float]]:
    """Time each path once per round, in turn (A B C A B C ...); return the seconds per path."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for index in range(rounds):
        for name, call in paths.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
        if progress:
            done = ", ".join(f"{name} {values[-1]:.3f} s" for name, values in times.items())
            print(f"  round {index + 1}/{rounds}: {done}", flush=True)
    return times


def run_child(
    command: Sequence[str], env: Mapping[str, str] | None = None, label: str = ""
) -> dict[str, Any]:
    """Run a benchmark child; return the JSON on its last stdout line plus wall, CPU, peak RSS.

    The child's stdout lines before the last are echoed (progress), its stderr passes through.
    """
    start = time.perf_counter()
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, env=dict(env or os.environ), text=True
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if line.strip() and not line.startswith("{"):
            print(f"  {label}{line.rstrip()}", flush=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"benchmark child {' '.join(command[:3])} failed with exit code {code}")
    result = json.loads(lines[-1])
    result["process"] = {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "system_s": usage.ru_stime,
        "peak_rss_gib": usage.ru_maxrss / 2**20,  # kB on Linux
    }
    return result


def emit(result: Mapping[str, Any]) -> None:
    """Print a child's result as the last stdout line (read by :func:`run_child`)."""
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
