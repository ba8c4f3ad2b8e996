"""`./deepaf ui` in a real browser (headless Debian chromium + chromedriver, Selenium) against
the real graph on the virtual microscope: live frames, jog (and a refused jog past the soft
limit), focus into the depth of field, a small scan with progress, the deep-zoom viewer's
tiles, and refusal of requests without the token.

One `./deepaf ui` (graph + server) and one browser serve every test of this module. Deselect
with `-m "not browser"`. Screenshots go to the test's tmp dir; set DEEPAF_UI_SCREENSHOT=PATH to
also copy the viewer's screenshot there (docs/ui.png for the README).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from deepaf.ui.spawn import start_dashboard

pytestmark = [pytest.mark.ros, pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PROFILE = "4x"
CAPTURE = "1014x760"  # a quarter of the sensor: fast tiles, the model's pixel size
TOKEN = "browser-test-token"


def _need_browser() -> None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "needs Debian chromium and chromium-driver (apt-get install chromium chromium-driver; "
            ".ci/run installs them when it can)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("needs selenium (requirements-python.txt; re-run ./deepaf)")


def _get(url: str, token: str | None = TOKEN) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, headers={"X-DeepAf-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@pytest.fixture(scope="module")
def tissue_field():
    """A tissue position of the virtual slide and its true best-focus z."""
    import numpy as np
    from deepaf_driver.backends.sim import SCAN_SLIDE
    from deepaf_driver.sim import VirtualMicroscope

    scope = VirtualMicroscope(PROFILE, "lab_a_standard", slide_seed=0, slide=SCAN_SLIDE)
    x, y = scope.random_tissue_position(np.random.default_rng(7))
    return scope, float(x), float(y)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """`./deepaf ui` (its own graph, token required) on a free port; yields (url, tmp, proc)."""
    _need_browser()
    tmp = tmp_path_factory.mktemp("ui")
    ns = f"ui{os.getpid()}"
    argv = [
        "--namespace",
        ns,
        "--port",
        "0",
        "--token",
        TOKEN,
        "--capture-size",
        CAPTURE,
        "--profile",
        PROFILE,
        "--scans-root",
        str(tmp / "scans"),
        "--log-dir",
        str(tmp / "logs"),
        "--rate",
        "20",
    ]
    proc, url = start_dashboard(argv, tmp / "ui.log", 120)
    try:
        assert url is not None, "no dashboard within 120 s:\n" + proc.output()
        yield url, tmp, proc, ns
    finally:
        proc.stop(timeout=30)


@pytest.fixture(scope="module")
def scope_client(dashboard):
    """A test-side DeepAfClient on the same graph (to set the scene and read the truth)."""
    import rclpy
    from deepaf.client import DeepAfClient

    rclpy.init()
    client = DeepAfClient(dashboard[3], server_timeout=90.0)
    try:
        yield client
    finally:
        client.close()
        rclpy.try_shutdown()


@pytest.fixture(scope="module")
def browser(dashboard):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1500",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        driver.get(dashboard[0] + "?token=" + TOKEN)
        yield driver
    finally:
        driver.quit()


def js(driver, expr: str):
    return driver.execute_script("return " + expr)


def wait_for(driver, expr: str, timeout: float, what: str):
    """Poll a JS expression until truthy; fail naming `what` (with the page's message)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = js(driver, expr)
        if value:
            return value
        time.sleep(0.25)
    msg = js(driver, "document.getElementById('msg').textContent")
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (page says: {msg!r})")


def pose(driver) -> dict:
    return wait_for(driver, "window.deepaf.pose", 30, "the stage pose")


def test_live_frames_update(browser, dashboard):
    wait_for(browser, "window.deepaf.clientId && window.deepaf.frames > 0", 90, "a first frame")
    first = js(browser, "[window.deepaf.frames, window.deepaf.lastMeta.stamp]")
    time.sleep(2.0)
    later = js(browser, "[window.deepaf.frames, window.deepaf.lastMeta.stamp]")
    assert later[0] >= first[0] + 5, (first, later)  # a few fps at least, on a busy machine
    assert later[1] > first[1]  # newer camera frames, not the same one again
    assert "fps" in browser.find_element("id", "fps").text
    browser.save_screenshot(str(dashboard[1] / "live.png"))


def test_a_jog_moves_the_stage_and_a_jog_past_the_soft_limit_is_refused(
    browser, dashboard, scope_client
):
    from deepaf.ui.live import jog_steps

    before = pose(browser)
    browser.find_element("css selector", "input[name=jog-size][value=fine]").click()
    browser.find_element("css selector", "[data-jog='x:1']").click()
    step = js(browser, "window.deepaf.config.jog.xy_fine")  # a tenth of the field, 1-2-5
    assert step == pytest.approx(20e-6)  # the 1014 px capture field of 4x: 393 um
    wait_for(browser, f"window.deepaf.pose.x > {before['x'] + 0.5 * step}", 30, "the x jog")
    assert "jog x: done" in browser.find_element("id", "msg").text
    # the stage's soft limit: z_max 0.5 mm; park just below it, then ask for 2 DoF up
    assert scope_client.move_stage(z=0.0005 - 10e-6, timeout=60).ok
    wait_for(browser, "Math.abs(window.deepaf.pose.z - 0.00049) < 1e-6", 30, "the pose at z_max")
    browser.find_element("css selector", "input[name=jog-size][value=coarse]").click()
    browser.find_element("css selector", "[data-jog='z:1']").click()
    msg = wait_for(
        browser,
        "document.getElementById('msg').className === 'error' && "
        "document.getElementById('msg').textContent",
        30,
        "the refusal",
    )
    assert "refused (409)" in msg and "soft limits" in msg, msg
    assert scope_client.move_stage(timeout=30).result.position.z == pytest.approx(0.00049)
    assert jog_steps(PROFILE).z_coarse > 10e-6


def test_focus_brings_a_defocused_field_into_the_depth_of_field(
    browser, dashboard, scope_client, tissue_field
):
    from deepaf_driver.profiles import half_dof_m

    scope, x, y = tissue_field
    best = float(scope.best_focus_z(x, y))
    half = half_dof_m(PROFILE)
    start = best + 2.5 * half  # 74 um above best focus: clearly out of the depth of field
    assert scope_client.move_stage(x=x, y=y, z=start, timeout=60).ok
    wait_for(browser, f"Math.abs(window.deepaf.pose.z - {start}) < 1e-6", 30, "the defocused pose")
    time.sleep(0.5)  # a preview taken at the new pose
    browser.find_element("id", "btn-focus").click()
    msg = wait_for(
        browser,
        "/^focus: moved/.test(document.getElementById('msg').textContent) && "
        "document.getElementById('msg').textContent",
        60,
        "the focus move",
    )
    z = scope_client.move_stage(timeout=30).result.position.z
    assert abs(z - best) <= half, (msg, z, best, half)
    assert abs(start - best) > half
    browser.save_screenshot(str(dashboard[1] / "focused.png"))


@pytest.fixture(scope="module")
def finished_scan(browser, dashboard, scope_client, tissue_field):
    """A 2 x 1 field scan started from the page; returns (name, progress seen)."""
    _scope, x, y = tissue_field
    fov_w, fov_h = 1014 * 3.875e-7, 760 * 3.875e-7
    region = (x - 0.7 * fov_w, y - 0.3 * fov_h, x + 0.7 * fov_w, y + 0.3 * fov_h)
    for key, value in zip(("x0", "y0", "x1", "y1"), region, strict=True):
        field = browser.find_element("id", f"scan-{key}")
        field.clear()
        field.send_keys(f"{value * 1e3:.4f}")
    browser.find_element("css selector", "#scan-method option[value='fixed']").click()
    name = "ui-browser-scan"
    browser.find_element("id", "scan-name").clear()
    browser.find_element("id", "scan-name").send_keys(name)
    browser.find_element("id", "btn-scan-start").click()
    seen: list[tuple[str, str, str]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = browser.find_element("id", "scan-state").text
        done, left = (browser.find_element("id", k).text for k in ("tiles-done", "tiles-left"))
        if not seen or seen[-1] != (state, done, left):
            seen.append((state, done, left))
        if state.startswith(("done", "failed", "canceled")):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"scan did not finish in 240 s: {seen[-5:]}")
    wait_for(browser, f"document.querySelector(\"button[data-scan='{name}']\")", 60, "the list")
    return name, seen


def test_a_small_scan_runs_to_the_end_with_progress_shown(browser, finished_scan):
    _name, seen = finished_scan
    state, done, left = seen[-1]
    assert state.startswith("done"), seen
    assert int(done) >= 2 and left == "0", seen
    assert any(s[0].split()[0] not in ("idle", "done") for s in seen), seen  # live progress
    tiles = js(browser, "window.deepaf.tiles.length")
    assert tiles >= 2  # each tile drawn on the map as it came
    assert js(browser, "window.deepaf.tiles.every(t => t.focus_quality !== undefined)")


def test_the_viewer_loads_tiles_of_the_result(browser, dashboard, finished_scan):
    url, tmp = dashboard[0], dashboard[1]
    name, _ = finished_scan
    browser.execute_script("window.scrollTo(0, 0)")
    browser.find_element("css selector", f"button[data-scan='{name}']").click()
    wait_for(
        browser,
        "window.deepaf.viewer && window.deepaf.viewer.world.getItemCount() > 0 && "
        "window.deepaf.tilesLoaded > 0",
        60,
        "deep-zoom tiles",
    )
    time.sleep(1.0)
    tiles = js(
        browser,
        "performance.getEntriesByType('resource').filter(e => "
        "e.name.includes('/slide_files/')).map(e => [e.name, e.responseStatus])",
    )
    assert tiles and all(status == 200 for _, status in tiles), tiles
    status, ctype, body = _get(tiles[0][0])
    assert status == 200 and ctype == "image/jpeg" and body[:2] == b"\xff\xd8"
    assert re.match(r"^\d+(\.\d+)? (um|mm)$", browser.find_element("id", "scalebar-label").text)
    assert "within_dof_pct" in browser.find_element("id", "report").text
    assert js(browser, "document.getElementById('focus-map').naturalWidth") > 0
    browser.execute_script("document.getElementById('viewer-panel').scrollIntoView()")
    browser.save_screenshot(str(tmp / "viewer.png"))
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp / "dashboard.png"
    browser.save_screenshot(str(shot))
    target = os.environ.get("DEEPAF_UI_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        with Image.open(shot) as img:  # 256 colours: ~4x smaller, for the README
            img.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(
                target, optimize=True
            )
    info = json.loads(_get(f"{url}api/slides/{name}/info")[2])
    assert info["mpp"] and info["width"] > 0


def test_requests_without_the_token_are_refused(dashboard):
    import asyncio

    import aiohttp

    url = dashboard[0]
    assert _get(url + "api/state", token=None)[0] == 401
    assert _get(url + "api/state", token="wrong")[0] == 401
    assert _get(url, token=None)[0] == 401
    assert _get(url + "api/state")[0] == 200

    async def ws(params):
        async with aiohttp.ClientSession() as session:
            try:
                conn = await session.ws_connect(url + "ws", params=params)
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
            await conn.close()
            return 101

    assert asyncio.run(ws({})) == 401
    assert asyncio.run(ws({"token": TOKEN})) == 101
