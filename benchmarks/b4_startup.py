"""B4: start-up time of the ``seglab`` command and of ``import seglab``.

Usage::

    .venv/bin/python benchmarks/b4_startup.py [--runs 10]

Each command runs ``--runs`` times in a fresh process (after one untimed run that warms the
file cache); the figure is the median wall time. ``seglab --help`` is the installed console
script, so it includes its restart with the malloc settings (:mod:`seglab.allocator`). The
bare interpreter start (``python -c pass``) is the baseline of the same run, and ``import
monai`` (once) shows what the lazy imports of the command line avoid.

Prints progress and, last, one JSON line read by ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit  # noqa: E402


def timed(command: list[str], runs: int) -> list[float]:
    """Wall times of ``runs`` runs of ``command`` (after one warm-up run)."""
    env = {k: v for k, v in os.environ.items() if k != "SEGLAB_ALLOCATOR"}
    subprocess.run(command, check=True, capture_output=True, env=env)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    """Time the commands; print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    python = sys.executable
    script = str(Path(python).with_name("seglab"))
    commands = {
        "python -c pass": ([python, "-c", "pass"], args.runs),
        "import seglab": ([python, "-c", "import seglab"], args.runs),
        "import seglab.cli.app": ([python, "-c", "import seglab.cli.app"], args.runs),
        "seglab --help": ([script, "--help"], args.runs),
        "import monai": ([python, "-c", "import monai"], 1),
    }
    figures = {}
    for name, (command, runs) in commands.items():
        times = timed(command, runs)
        figures[name] = {"median_s": statistics.median(times), "all_s": times}
        print(f"{name}: {figures[name]['median_s']:.3f} s", flush=True)
    emit({"benchmark": "B4", "runs": args.runs, "commands": figures})


if __name__ == "__main__":
    main()
