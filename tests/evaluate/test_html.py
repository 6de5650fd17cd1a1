"""The HTML report rendered by headless Chromium: the plots are there and drawn.

Chromium is required, not optional: CI installs it (.ci/run). Locally:
``apt-get install chromium``.
"""

import re
import shutil
import subprocess

import numpy as np
import pytest


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is needed to render the HTML report: install it with "
                    "`apt-get install -y chromium` (CI does so in .ci/run).")
    return path


def run_chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
               "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def console_messages(done: subprocess.CompletedProcess) -> list[str]:
    """What the page wrote to its JavaScript console (errors included), from the log."""
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_console_messages_are_seen(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>notDefined();</script></body></html>")
    done = run_chromium(tmp_path, "--dump-dom", page.resolve().as_uri())
    assert done.returncode == 0
    assert any("notDefined is not defined" in m for m in console_messages(done))


@pytest.mark.slow
def test_html_report_renders_with_its_plots(report, tmp_path):
    paths = report.save(tmp_path / "report")
    url = paths["html"].resolve().as_uri()

    dom = run_chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom) == []
    assert "<table" in dom.stdout and ">int8<" in dom.stdout
    for figure in ("plot-accuracy-size", "plot-latency"):
        match = re.search(rf'<figure id="{figure}">(.*?)</figure>', dom.stdout, re.S)
        assert match, f"{figure} missing from the rendered DOM"
        svg = match.group(1)
        assert "<svg" in svg and svg.count("<path") >= 5, f"{figure} has no drawing"
    scatter = re.search(r'<figure id="plot-accuracy-size">(.*?)</figure>', dom.stdout, re.S)[1]
    assert ">float<" in scatter and ">int8<" in scatter  # points are labelled

    shot = tmp_path / "report.png"
    done = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1300,1000", url)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1000, 1300)
    # Below the table, the two plots: far more than background in that band.
    band = pixels[300:700]
    assert np.mean(np.any(band < 0.9, axis=-1)) > 0.02
    assert len(np.unique(band.reshape(-1, 3), axis=0)) > 50  # coloured marks, not blank
