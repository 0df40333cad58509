"""The generated report renders in a real browser: headless Chromium screenshot (not blank, matplotlib
figures painted) and DOM (tables, embedded <img> figures, no script element from an escaped name); on the
demo's runs, the answer (#summary) lies within the first screen at 1400x900."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reports.build import build_report
from tests.reports.demo_like import make_controls_run, make_demo_runs

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / ".ci" / "install-chromium.sh"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# The colour matplotlib paints the pivot encoder's bars with (reports.figures.ROLE_COLOURS[2]).
PIVOT_RED = np.array([0xD6, 0x27, 0x28])
# The red of a control that does not behave (reports.template: .control-bad).
CONTROL_RED = np.array([0xB7, 0x1C, 0x1C])
FIRST_SCREEN = (1400, 900)  # width, height in CSS pixels
# Added to a copy of the report (the report itself has no script): writes where #summary lies, as laid out.
LAYOUT_PROBE = (
    "<script>(function () { var box = document.getElementById('summary').getBoundingClientRect();"
    " document.body.setAttribute('data-layout', JSON.stringify({top: box.top, bottom: box.bottom,"
    " width: window.innerWidth, height: window.innerHeight})); })();</script>"
)


def _find_browser() -> str | None:
    override = os.environ.get("CHROMIUM")
    if override:
        return override if shutil.which(override) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> str:
    found = _find_browser()
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=False, timeout=600, capture_output=True)
        found = _find_browser()
    if found is None:
        pytest.skip("no Chromium: not on PATH and not installable here (needs root + apt-get); "
                    "run .ci/install-chromium.sh as root or set CHROMIUM=/path/to/chrome")
    return found


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def rendered(browser, built_report, tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    report = built_report[0]
    url = report.resolve().as_uri()
    shot = root / "shot.png"
    # One launch does both: --dump-dom prints the DOM, --screenshot writes the PNG.
    result = _chromium(browser, root / "profile", "--dump-dom", f"--screenshot={shot}", "--window-size=1280,3000", url)
    assert shot.is_file(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    assert result.returncode == 0 and "<html" in result.stdout, f"--dump-dom failed: {result.stderr[-2000:]}"
    return shot, result.stdout


def test_install_script_is_valid_bash():
    assert INSTALL_SCRIPT.is_file() and os.access(INSTALL_SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(INSTALL_SCRIPT)], check=True)


def test_screenshot_is_not_blank_and_shows_figures(rendered):
    shot, _ = rendered
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.shape[:2] == (3000, 1280)
    assert pixels.std() > 20, "screenshot is (nearly) one colour"
    wide = pixels.astype(np.int32)
    packed = (wide[..., 0] << 16) | (wide[..., 1] << 8) | wide[..., 2]
    distinct = np.unique(packed).size
    assert distinct > 200, f"only {distinct} distinct colours: text and figures did not render"
    # A matplotlib bar in the pivot colour proves the base64 PNGs were decoded and painted.
    red = (np.abs(pixels - PIVOT_RED).max(axis=-1) <= 6).sum()
    assert red > 500, f"only {red} pixels of the pivot bar colour: figures not painted"


def test_dom_holds_tables_and_embedded_figures(rendered):
    _, dom = rendered
    assert dom.count('<table class="summary">') >= 2
    for table in ('<table class="encoders">', '<table class="not-ok">', '<table class="versions">'):
        assert table in dom
    images = dom.count('<img alt=')
    embedded = dom.count('src="data:image/png;base64,')
    assert images >= 8 and embedded == images
    assert "<script" not in dom  # the encoder named <script>alert(1)</script> stayed text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom


@pytest.fixture(scope="module")
def demo_reports(tmp_path_factory) -> dict[str, Path]:
    """The report ``python -m benchmarks.demo`` builds (K = 2 seeds per arm, the controls run beside the lineage's
    runs), on demo-shaped runs; and a report of the controls run alone."""
    root = tmp_path_factory.mktemp("demo")
    runs = make_demo_runs(root, k=2)
    controls = make_controls_run(root, k=2, null_flagged_by_loc=True)  # a control that misbehaves, painted red
    return {
        "demo": build_report([*runs, controls], root / "report.html", title="Demo: a trained original, +SFT and +PIVOT on the shapes world and digits, with controls"),
        "controls": build_report([controls], root / "controls" / "report.html", title="Demo controls"),
    }


def _first_screen(browser: str, report: Path, root: Path) -> tuple[dict, np.ndarray]:
    """Where #summary lies in a 1400x900 window, and the screenshot of that window."""
    probe = root / "probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", LAYOUT_PROBE + "</body>"), encoding="utf-8")
    shot = root / "first-screen.png"
    result = _chromium(browser, root / "profile", "--dump-dom", f"--screenshot={shot}", f"--window-size={FIRST_SCREEN[0]},{FIRST_SCREEN[1]}", probe.as_uri())
    found = re.search(r'data-layout="([^"]*)"', result.stdout)
    assert found and shot.is_file(), f"no layout or screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1))), np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("which", ["demo", "controls"])
def test_the_answer_is_on_the_first_screen(browser, demo_reports, which, tmp_path):
    layout, pixels = _first_screen(browser, demo_reports[which], tmp_path)
    assert layout["width"] == FIRST_SCREEN[0] and pixels.shape[:2] == FIRST_SCREEN[::-1]
    assert 0 <= layout["top"] < layout["bottom"] <= FIRST_SCREEN[1], f"the answer spans {layout['top']:.0f}-{layout['bottom']:.0f} px, past the first {FIRST_SCREEN[1]} px"
    # the planted false alarm of the null control is painted red on the first screen, in both
    red = (np.abs(pixels - CONTROL_RED).max(axis=-1) <= 40).sum()
    assert red > 300, f"only {red} pixels of the misbehaving control's red on the first screen"
