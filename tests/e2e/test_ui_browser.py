"""The MLflow UI of ``seglab ui`` checked in a real browser: Debian's headless Chromium.

The session's tiny demo (``tiny_demo`` in ``tests/conftest.py``) fills a store: two trained,
registered and promoted bundles (``lung-demo``, ``mito-demo`` at ``@champion``), their
evaluations and the three scaled-down studies. ``seglab ui`` serves that store on a free loopback
port in a process of its own, and Playwright drives Chromium through the pages a user opens: the
experiments, a training run (a metric and its value, its learning-curve figure rendered) and the
registered models with their ``champion`` alias.

Full-page screenshots of every page are kept in ``test-artifacts/ui/`` at the repository root
(ignored by git), so that a reviewer can see what the test saw.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright
from tests.e2e.conftest import require_program

from seglab.tracking.store import resolve_store
from seglab.workflows.ui import wait_until_healthy

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "ui"
SEGLAB = Path(sys.executable).with_name("seglab")
#: The UI is a React single-page app: its first load takes seconds on a busy 2-core machine.
TIMEOUT_MS = 60_000
VIEWPORT = {"width": 1400, "height": 900}
#: Set before any page script runs: the UI opens in its "Model training" view (not "GenAI"),
#: the MLflow Assistant panel stays closed and the "new model registry UI" announcement stays
#: dismissed, so that neither covers the screenshots. Keys of MLflow 3.17's UI.
QUIET_UI = """
localStorage.setItem('mlflow.workflowType_v1', '"machine_learning"');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('_mlflow_model_registry_promo_modal_dismissed_v1', 'true');
"""

#: The figure the training run logs, checked in the artifact browser.
FIGURE = "training/learning_curves.png"
#: A metric of the training run checked on its page, with the value MLflow shows.
METRIC = "val_mean_dice"


@dataclass(frozen=True)
class DemoStore:
    """The demo's store and what the test looks for in it (read back through MlflowClient)."""

    store: Path
    experiments: dict[str, str]  # name -> id
    run_id: str  # the training run behind lung-demo@champion
    run_name: str
    run_experiment_id: str
    metric_value: float
    figure_size: tuple[int, int]  # width, height in pixels


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shown_number(value: float) -> str:
    """``value`` as the UI's JavaScript writes it (shortest round trip, no exponent)."""
    assert 1e-6 <= abs(value) < 1e21, f"{value} would be written with an exponent"
    return np.format_float_positional(value, unique=True, trim="-")


def child_pids(pid: int) -> list[int]:
    """Direct children of process ``pid`` (Linux ``/proc``)."""
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def session_processes(session: int) -> list[str]:
    """Command lines of the processes still alive in ``session``."""
    left = subprocess.run(["ps", "-o", "pid=,args=", "-s", str(session)], capture_output=True)
    return left.stdout.decode().splitlines()


def stop_session(process: subprocess.Popen, sessions: list[int], timeout: float = 30.0) -> None:
    """SIGTERM ``process``; SIGKILL all of ``sessions`` if anything is still there after.

    SIGTERM, not SIGINT: a process started from a non-interactive shell's background job
    inherits SIGINT ignored, while ``seglab ui`` handles SIGTERM itself like Ctrl+C.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + timeout
    while any(session_processes(s) for s in sessions) and time.monotonic() < deadline:
        time.sleep(0.2)
    for session in sessions:  # a safety net: `seglab ui` should have stopped them itself
        if session_processes(session):
            try:
                os.killpg(session, signal.SIGKILL)
            except ProcessLookupError:
                pass
    process.wait(timeout=timeout)


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG of ``page`` as ``test-artifacts/ui/<name>.png`` and check it.

    The MLflow UI scrolls inside its own panels, not the document, so the viewport is first
    stretched to the tallest scrolling element to take the whole page.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    height = page.evaluate(
        "() => Math.max(...Array.from(document.querySelectorAll('*'), e => e.scrollHeight))"
    )
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, 900), 4000)})
    try:
        page.screenshot(path=path, full_page=True)
    finally:
        page.set_viewport_size(VIEWPORT)
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape[1] == VIEWPORT["width"] and pixels.shape[0] >= VIEWPORT["height"]
    # a page with text and widgets, not a blank or single-colour screen
    assert pixels.std() > 5 and len(np.unique(pixels)) > 32, f"{path} looks blank"
    print(f"screenshot: {path}")
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_program("chromium", "/usr/lib/chromium/chromium")


@pytest.fixture(scope="module")
def demo_store(chromium, tiny_demo, tmp_path_factory) -> DemoStore:
    """The session's tiny demo (after the chromium check: no wasted minute when it is absent)."""
    _, store, _ = tiny_demo
    root = tmp_path_factory.mktemp("ui-demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        client = resolve_store(store).client()
        experiments = {e.name: e.experiment_id for e in client.search_experiments()}
        version = client.get_model_version_by_alias("lung-demo", "champion")
        run = client.get_run(version.run_id)
        local = Path(client.download_artifacts(run.info.run_id, FIGURE, str(root)))
    with Image.open(local) as figure:
        figure_size = figure.size
    return DemoStore(
        store=store,
        experiments=experiments,
        run_id=run.info.run_id,
        run_name=run.info.run_name,
        run_experiment_id=run.info.experiment_id,
        metric_value=run.data.metrics[METRIC],
        figure_size=figure_size,
    )


@pytest.fixture(scope="module")
def ui_url(demo_store, tmp_path_factory):
    """``seglab ui`` on the demo store, on a free loopback port; stopped (SIGTERM) after."""
    assert SEGLAB.exists(), f"the seglab console script is not installed next to {sys.executable}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log_path = tmp_path_factory.mktemp("ui-log") / "seglab-ui.log"
    command = [str(SEGLAB), "ui", "--store", str(demo_store.store)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    sessions = [process.pid]  # seglab's session; the MLflow server gets its own (added below)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        try:
            wait_until_healthy(url, process, timeout=120)
        except Exception:
            print(log_path.read_text(errors="replace"))
            raise
        print(f"seglab ui answered /health after {time.perf_counter() - started:.1f} s")
        sessions += [os.getsid(pid) for pid in child_pids(process.pid)]
        yield url
    finally:
        stop_session(process, sessions)
        log = log_path.read_text(errors="replace")
    assert process.returncode == 0, log
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))
    for session in sessions:
        assert session_processes(session) == [], f"seglab ui left processes behind:\n{log}"


@pytest.fixture(scope="module")
def page(chromium, ui_url):
    """A headless Chromium page on the UI (``--no-sandbox``: the sandbox refuses root)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            context = browser.new_context(viewport=VIEWPORT, base_url=ui_url)
            context.add_init_script(QUIET_UI)
            context.set_default_timeout(TIMEOUT_MS)
            yield context.new_page()
        finally:
            browser.close()


def test_experiments_page_lists_the_demo_experiments(page, demo_store):
    page.goto("/#/experiments")
    for name in ("lung", "mito", "evaluations", "studies"):
        assert name in demo_store.experiments
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    screenshot(page, "experiments")


def test_experiment_page_lists_the_training_run(page, demo_store):
    page.goto(f"/#/experiments/{demo_store.run_experiment_id}/runs")
    run_link = page.get_by_role("link", name=demo_store.run_name, exact=True)
    expect(run_link).to_be_visible(timeout=TIMEOUT_MS)
    screenshot(page, "experiment-lung")


def test_run_page_shows_the_training_metrics(page, demo_store):
    page.goto(f"/#/experiments/{demo_store.run_experiment_id}/runs/{demo_store.run_id}")
    expect(page.get_by_role("heading", name=demo_store.run_name)).to_be_visible(timeout=TIMEOUT_MS)
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=METRIC, exact=True))
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    expect(row).to_contain_text(shown_number(demo_store.metric_value))
    # the run's "Registered models" section links to the version it became
    registered = page.get_by_role("link", name="lung-demo", exact=True)
    expect(registered).to_have_attribute("href", "#/models/lung-demo/versions/1")
    screenshot(page, "run-overview")


def test_run_artifacts_show_the_learning_curves_figure(page, demo_store):
    folder, file = FIGURE.split("/")
    run_page = f"/#/experiments/{demo_store.run_experiment_id}/runs/{demo_store.run_id}"
    page.goto(f"{run_page}/artifacts")
    expect(page.get_by_text(folder, exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_text(folder, exact=True).click()
    page.get_by_text(file, exact=True).click()
    expect(page.get_by_text(FIGURE, exact=True)).to_be_visible(timeout=TIMEOUT_MS)  # its title
    # the preview is the logged PNG itself, decoded by the browser at its own size
    width, height = demo_store.figure_size
    page.wait_for_function(
        """([width, height]) => Array.from(document.images).some(
            img => img.complete && img.naturalWidth === width && img.naturalHeight === height
                   && img.getBoundingClientRect().width > 100)""",
        arg=[width, height],
        timeout=TIMEOUT_MS,
    )
    screenshot(page, "run-artifact-figure")


def test_models_page_shows_both_champions(page):
    page.goto("/#/models")
    for name in ("lung-demo", "mito-demo"):
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))
        expect(row).to_be_visible(timeout=TIMEOUT_MS)
        expect(row).to_contain_text("champion")
        expect(row).to_contain_text("Version 1")
    screenshot(page, "models")


def test_model_page_shows_version_one_as_champion(page):
    page.goto("/#/models/lung-demo")
    expect(page.get_by_role("heading", name="lung-demo")).to_be_visible(timeout=TIMEOUT_MS)
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="Version 1"))
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    expect(row).to_contain_text("champion")
    screenshot(page, "model-lung-demo")
