"""report.html and compare.html in a real browser: headless Chromium renders them offline.

Two checks per page: a full-page screenshot (a real PNG, large and not blank), and the DOM after
load -- a copy of the page with one injected script lists every ``<img>`` that decoded
(``complete && naturalWidth > 0``); each expected ``plot-*`` image must be among them.

The selection explorer is driven like a user would: Chromium runs with its DevTools protocol on a
local port (``websocket-client`` talks to it), real mouse clicks land on a status filter and on a
cluster of the map, text is typed into the search box, and the rows left visible are checked
against the decisions the run wrote.  Skipped when no Chromium is installed (Debian:
``apt-get install chromium``; ``SELECTLLM_CHROMIUM`` names another binary).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess  # starts Chromium

from selectllm.pipeline import STAGES, run_stage
from selectllm.rundir import RunDir

from helpers import compare_run, make_pool_run, make_report_run, pool_config, run_report


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
    assert " src=" not in "".join(re.findall(r"<script[^>]*>", html, re.I))  # inline scripts only, if any
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


def test_reports_render_in_chromium(tmp_path, ray_local):
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


# ----------------------------------------------------------------------------- the explorer, clicked
class DevTools:
    """Headless Chromium driven through its DevTools protocol (one page, one websocket)."""

    def __init__(self, tmp: Path, url: str, width: int = 1280, height: int = 900):
        import urllib.request

        import websocket

        exe = chromium()
        if exe is None:
            pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
        profile = tmp / "cdp-profile"
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--window-size={width},{height}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60  # start-up wait, not a speed assertion
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = []
        while not pages and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            time.sleep(0.1)
        assert pages, "no page target in Chromium"
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # events are skipped
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def js(self, expr: str):
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")

    def wait_for(self, expr: str, what: str):
        for _ in range(300):  # the page renders synchronously; this only waits for the load
            if self.js(expr):
                return
            time.sleep(0.05)
        pytest.fail(f"the page never showed {what}")

    def point_of(self, selector: str) -> tuple[float, float]:
        """The middle of an element, scrolled into view."""
        x, y = self.js(f"""(function () {{ var e = document.querySelector({json.dumps(selector)});
            e.scrollIntoView({{block: "center"}}); var r = e.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2]; }})()""")
        return x, y

    def click_at(self, x: float, y: float) -> None:
        """A real mouse click (move, press, release)."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def click(self, selector: str) -> None:
        self.click_at(*self.point_of(selector))

    def visible_groups(self) -> list[dict]:
        return self.js("""Array.prototype.filter.call(document.querySelectorAll("#ex-list section.group"),
            function (e) { return e.offsetParent !== null; }).map(function (e) {
            return {cluster: e.getAttribute("data-cluster"), status: e.getAttribute("data-status"),
                    ids: Array.prototype.map.call(e.querySelectorAll("li.cand"), function (li) {
                        return li.getAttribute("data-id"); }),
                    chosen: Array.prototype.map.call(e.querySelectorAll("li.cand.chosen"), function (li) {
                        return li.getAttribute("data-id"); })}; })""")

    def screenshot(self, path: Path) -> bytes:
        import base64

        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_explorer_filters_follow_clicks_in_chromium(tmp_path):
    import pyarrow.parquet as pq


    if chromium() is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    run = tmp_path / "run"
    make_report_run(run)
    _, page, _ = run_report(run, "select.budget=6")
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    decisions = pq.read_table(run / "select" / "decisions.parquet").to_pylist()
    every = sorted((str(d["cluster_id"]), d["status"]) for d in decisions)

    b = DevTools(tmp_path, report.resolve().as_uri())
    try:
        b.wait_for("document.querySelectorAll('#ex-list section.group').length > 0", "the explorer's groups")
        shown = b.visible_groups()
        assert sorted((g["cluster"], g["status"]) for g in shown) == every
        assert [g["chosen"] for g in shown] == [d["chosen_ids"] for d in decisions]

        # a status filter: only the fallback groups stay
        b.click('#f-status button[data-status="fallback"]')
        shown = b.visible_groups()
        assert shown and [g["status"] for g in shown] == [d["status"] for d in decisions if d["status"] == "fallback"]
        assert b.js("document.getElementById('ex-count').textContent").startswith(f"{len(shown)} of {len(decisions)}")
        b.click('#f-status button[data-status=""]')
        assert len(b.visible_groups()) == len(decisions)
        b.screenshot(tmp_path / "explorer-all.png")

        # a cluster on the map: whatever link is on top where the mouse lands decides the cluster
        x, y = b.point_of('svg.map a.cl[data-cluster="2"] circle')
        target = b.js(f"document.elementFromPoint({x}, {y}).closest('a').getAttribute('data-cluster')")
        b.click_at(x, y)
        assert b.js("window.location.hash") == f"#cluster-{target}"
        # the filter follows the hash on `hashchange`, an event the browser fires after the click returns
        b.wait_for(f"document.getElementById('f-cluster').value === {json.dumps(target)}", "the map's cluster filter")
        shown = b.visible_groups()
        assert shown and {g["cluster"] for g in shown} == {target}
        assert len(shown) == sum(1 for d in decisions if str(d["cluster_id"]) == target)
        assert b.js(f"document.getElementById('f-cluster').value") == target
        assert b.js(f"""(function () {{ var r = document.getElementById('cluster-{target}').getBoundingClientRect();
            return r.top >= 0 && r.top < window.innerHeight; }})()"""), "the cluster's first group is not in view"
        png = b.screenshot(tmp_path / "explorer-cluster.png")
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000

        # text search (typed), after clearing the filters
        b.click("#f-clear")
        b.click("#f-search")
        b.call("Input.insertText", text="Instruction number 21")
        shown = b.visible_groups()
        want = [d["candidate_ids"] for d in decisions if "id021" in d["candidate_ids"]]
        assert want and [g["ids"] for g in shown] == want
    finally:
        b.close()
