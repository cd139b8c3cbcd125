"""The tuned glibc malloc settings of the seglab command (seglab.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from seglab import allocator
from seglab.allocator import ALLOCATOR_SETTINGS, MARKER, tuned_environment

glibc = pytest.mark.skipif(not allocator._uses_glibc(), reason="needs Linux with glibc")


def _clean(environ: dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in environ.items()
        if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", MARKER)
    }


@glibc
def test_a_plain_environment_gets_the_settings_and_the_marker() -> None:
    env = tuned_environment({"PATH": "/bin"})
    assert env == {"PATH": "/bin", **ALLOCATOR_SETTINGS, MARKER: "tuned"}


@pytest.mark.parametrize(
    "environ",
    [
        {MARKER: "tuned"},  # already restarted: never loop
        {MARKER: "default"},  # the user turned it off
        {"MALLOC_ARENA_MAX": "2"},  # the user's own malloc settings win
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"},
    ],
)
def test_nothing_to_do_when_set_turned_off_or_the_user_chose(environ: dict[str, str]) -> None:
    assert tuned_environment({"PATH": "/bin", **environ}) is None


@glibc
def test_the_restarted_process_runs_the_same_command_with_the_settings() -> None:
    code = (
        "import os, sys; from seglab.allocator import restart_with_tuned_allocator; "
        "restart_with_tuned_allocator(); "
        "print(os.environ.get('SEGLAB_ALLOCATOR'), os.environ.get('MALLOC_MMAP_THRESHOLD_'), "
        "sys.argv[1:])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "a", "b c"],
        env=_clean(dict(os.environ)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split(" ", 2)
    assert out[0] == "tuned"
    assert out[1] == ALLOCATOR_SETTINGS["MALLOC_MMAP_THRESHOLD_"]
    assert out[2].strip() == "['a', 'b c']"


@glibc
def test_the_seglab_console_script_restarts_once_and_still_works() -> None:
    script = os.path.join(os.path.dirname(sys.executable), "seglab")
    if not os.path.exists(script):
        pytest.skip("the seglab console script is not installed beside this python")
    done = subprocess.run(
        [script, "--version"], env=_clean(dict(os.environ)), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("seglab ")
