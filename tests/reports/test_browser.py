"""The generated report renders in a real browser: headless Chromium screenshot (not blank, matplotlib
figures painted) and DOM (tables, embedded <img> figures, no script element from an escaped name)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / ".ci" / "install-chromium.sh"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# The colour matplotlib paints the pivot encoder's bars with (reports.figures.ROLE_COLOURS[2]).
PIVOT_RED = np.array([0xD6, 0x27, 0x28])


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
