"""report.html and compare.html in a real browser: headless Chromium renders them offline.

Two checks per page: a full-page screenshot (a real PNG, large and not blank), and the DOM after
load -- a copy of the page with one injected script lists every ``<img>`` that decoded
(``complete && naturalWidth > 0``); each expected ``plot-*`` image must be among them.  Skipped
when no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from selectllm.pipeline import STAGES, run_stage
from selectllm.rundir import RunDir

from test_compare import compare_run, make_pool_run, pool_config

STRATEGIES = ["selectllm-paper", "random", "kcenter"]
REPORT_PLOTS = ["plot-funnel", "plot-clusters", "plot-map", "plot-stages"]
COMPARE_PLOTS = ["plot-coverage", "plot-quality", "plot-spend", "plot-funnel", "plot-clusters", "plot-stages",
                 *[f"plot-map-{s}" for s in STRATEGIES]]
CHECK_SCRIPT = """<script>window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; })
               .map(function (i) { return {id: i.id, w: i.naturalWidth, h: i.naturalHeight}; });
  var pre = document.createElement("pre"); pre.id = "img-check";
  pre.textContent = JSON.stringify({total: imgs.length, loaded: ok});
  document.body.appendChild(pre);
});</script>"""


def chromium() -> str | None:
    for name in (os.environ.get("SELECTLLM_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def browse(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def loaded_images(tmp: Path, page: Path) -> dict:
    probe = tmp / f"probe-{page.name}"
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html.lower()  # the report itself has no script: the probe adds one
    probe.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    done = browse(tmp, "--dump-dom", probe.resolve().as_uri())
    m = re.search(r'<pre id="img-check">(.*?)</pre>', done.stdout, re.S)
    assert m, f"no image check in the dumped DOM (rc={done.returncode}): {done.stderr[-500:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(tmp: Path, page: Path) -> bytes:
    png = tmp / f"{page.stem}.png"
    done = browse(tmp, f"--screenshot={png}", "--window-size=1280,3000", "--hide-scrollbars", page.resolve().as_uri())
    assert png.exists(), f"no screenshot (rc={done.returncode}): {done.stderr[-500:]}"
    return png.read_bytes()


def check_page(tmp: Path, page: Path, plots: list[str]) -> None:
    from PIL import Image

    data = screenshot(tmp, page)
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 30_000
    im = Image.open(io.BytesIO(data)).convert("RGB")
    assert im.size == (1280, 3000)
    small = im.resize((160, 375))
    colors = small.getcolors(maxcolors=1 << 16) or []
    assert len(colors) > 64, "the screenshot is (nearly) blank"
    white = sum(c for c, rgb in colors if min(rgb) > 245)
    assert white < 0.97 * 160 * 375, "the screenshot is (nearly) blank"

    check = loaded_images(tmp, page)
    ids = {i["id"]: i for i in check["loaded"]}
    assert check["total"] == len(check["loaded"]), f"images that did not load: {check}"
    for pid in plots:
        assert pid in ids, f"{pid} missing or not decoded in {page.name}"
        assert ids[pid]["w"] >= 300 and ids[pid]["h"] >= 150, ids[pid]


def test_reports_render_in_chromium(tmp_path):
    if chromium() is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    root = tmp_path / "run"
    make_pool_run(root)
    cfg = pool_config(root, "select.strategy=random")
    run = RunDir(str(root))
    compare_run(cfg, run, STRATEGIES)
    for stage in STAGES[3:]:  # select (random) and report, through the pipeline
        run_stage(cfg, run, stage)
    report = root / "report.html"
    assert "compare/compare.html" in report.read_text(encoding="utf-8")  # the report links the comparison
    check_page(tmp_path, report, REPORT_PLOTS)
    check_page(tmp_path, root / "compare" / "compare.html", COMPARE_PLOTS)
