"""The dashboard's HTTP and WebSocket surface with a stand-in bridge (no ROS, no browser):
every request needs the token when one is set, commands are rate-limited, bad input gets a
400 with the reason, unknown slides a 404, and DZI tiles come back as JPEG."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from deepaf.client import Outcome, Status
from deepaf.ui.live import Limits, jog_steps
from deepaf.ui.server import Dashboard, UiConfig

TOKEN = "s3cret-token"


class FakeBridge:
    """Records the commands the server hands over; moves succeed, e-stop always answers."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.cancelled: list[str | None] = []

    def snapshot(self) -> dict:
        return {"pose": {"x": 0.0, "y": 0.0, "z": 0.0}, "tiles": []}

    def jog(self, owner, delta):
        self.calls.append(("jog", owner, delta))
        return Outcome(Status.SUCCEEDED, None, "")

    def focus(self, owner):
        self.calls.append(("focus", owner))
        return Outcome(Status.REJECTED, None, "no prediction: no tissue in the field"), None

    def set_estop(self, engage):
        self.calls.append(("estop", engage))
        return Outcome(Status.SUCCEEDED, None, "emergency stop engaged")

    def start_scan(self, **kwargs):
        self.calls.append(("scan", kwargs))
        return Outcome(Status.SUCCEEDED, None, "scan started")

    def cancel_scan(self):
        return Outcome(Status.REJECTED, None, "no scan is running")

    def capture_png(self):
        return Outcome(Status.UNAVAILABLE, None, "camera/capture: camera node not running"), None

    def cancel_moves(self, owner=None):
        self.cancelled.append(owner)
        return 0


@pytest.fixture(scope="module")
def scans_root(tmp_path_factory, write_pyramid) -> Path:
    root = tmp_path_factory.mktemp("scans")
    (root / "scan-a").mkdir()
    write_pyramid(root / "scan-a" / "slide.tiff", 600, 400)
    (root / "scan-a" / "report.json").write_text(json.dumps({"tiles_total": 2, "tiles_tissue": 2}))
    return root


def _run(
    scans_root: Path, check, token: str | None = TOKEN, asset_dir: Path | None = None, burst=4
):
    async def go():
        bridge = FakeBridge()
        config = UiConfig("4x", jog_steps("4x"), Limits(), scans_root, token=token, burst=burst)
        if asset_dir is not None:
            config.asset_dir = asset_dir
        dash = Dashboard(bridge, config)
        async with TestClient(TestServer(dash.app)) as client:
            await check(client, bridge, dash)

    asyncio.run(go())


def test_requests_without_the_token_are_refused(scans_root):
    async def check(client, _bridge, _dash):
        for path in ("/", "/api/state", "/static/app.js", "/api/slides/scan-a/slide.dzi"):
            r = await client.get(path)
            assert r.status == 401, path
            assert "token" in (await r.json())["error"]
        r = await client.post("/api/estop", json={"engage": True})
        assert r.status == 401
        assert (await client.get("/api/state", params={"token": "wrong"})).status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await client.ws_connect("/ws")
        assert exc.value.status == 401
        ok = await client.get("/api/state", headers={"X-DeepAf-Token": TOKEN})
        assert ok.status == 200
        page = await client.get("/", params={"token": TOKEN})
        assert page.status == 200 and "deepaf_token" in page.cookies  # later requests carry it
        ws = await client.ws_connect("/ws", params={"token": TOKEN})
        hello = json.loads((await ws.receive()).data)
        assert hello["type"] == "hello"
        await ws.close()

    _run(scans_root, check)


def test_commands_are_rate_limited_but_the_emergency_stop_never_is(scans_root):
    async def check(client, bridge, _dash):
        ws = await client.ws_connect("/ws", params={"token": TOKEN})
        cid = json.loads((await ws.receive()).data)["client_id"]
        headers = {"X-DeepAf-Token": TOKEN, "X-Client-Id": cid}
        statuses = []
        for _ in range(6):
            r = await client.post("/api/jog", json={"axis": "x", "direction": 1}, headers=headers)
            statuses.append(r.status)
        assert statuses[:4] == [200] * 4 and 429 in statuses[4:]
        r = await client.post("/api/jog", json={"axis": "x", "direction": 1}, headers=headers)
        assert r.status == 429 and "too many commands" in (await r.json())["error"]
        assert "Retry-After" in r.headers
        for _ in range(6):
            r = await client.post("/api/estop", json={"engage": True}, headers=headers)
            assert r.status == 200
        await ws.close()
        for _ in range(100):  # the server sees the close when its loop gets to it (CI: > 0.1 s)
            if cid in bridge.cancelled:
                break
            await asyncio.sleep(0.05)
        assert cid in bridge.cancelled  # the closed connection's moves were cancelled

    _run(scans_root, check)


def test_moves_need_a_live_connection_and_bad_input_gets_the_reason(scans_root):
    async def check(client, bridge, _dash):
        h = {"X-DeepAf-Token": TOKEN}
        r = await client.post("/api/jog", json={"axis": "x", "direction": 1}, headers=h)
        assert r.status == 409 and "live view" in (await r.json())["error"]
        ws = await client.ws_connect("/ws", params={"token": TOKEN})
        h["X-Client-Id"] = json.loads((await ws.receive()).data)["client_id"]
        r = await client.post("/api/jog", json={"axis": "x", "direction": 5}, headers=h)
        assert r.status == 400 and "direction" in (await r.json())["error"]
        r = await client.post("/api/focus", headers=h)
        assert r.status == 409 and "no tissue" in (await r.json())["error"]
        r = await client.post("/api/scan", json={"region_mm": [6, 6, 6, 7], "name": "s"}, headers=h)
        assert r.status == 400 and "zero area" in (await r.json())["error"]
        r = await client.post(
            "/api/scan", json={"region_mm": [6, 6, 7, 7], "name": "../x"}, headers=h
        )
        assert r.status == 400 and "scan name" in (await r.json())["error"]
        r = await client.post(
            "/api/scan", json={"region_mm": [6, 6, 7, 7], "name": "s", "method": "magic"}, headers=h
        )
        assert r.status == 400 and "focus method" in (await r.json())["error"]
        r = await client.post("/api/scan", data=b"not json", headers=h)
        assert r.status == 400
        r = await client.post("/api/scan", json={"region_mm": [6, 6, 7, 7], "name": "s"}, headers=h)
        assert r.status == 200
        kwargs = bridge.calls[-1][1]
        assert kwargs["region_min"] == (0.006, 0.006) and kwargs["output_dir"].endswith("/s")
        r = await client.post("/api/capture", headers=h)
        assert r.status == 503 and "camera node" in (await r.json())["error"]
        await ws.close()

    _run(scans_root, check, burst=50)


def test_the_viewer_serves_dzi_tiles_and_404s_unknown_slides(scans_root, tmp_path):
    async def check(client, _bridge, _dash):
        h = {"X-DeepAf-Token": TOKEN}
        scans = await (await client.get("/api/scans", headers=h)).json()
        assert [s["name"] for s in scans["scans"]] == ["scan-a"] and scans["scans"][0]["slide"]
        info = await (await client.get("/api/slides/scan-a/info", headers=h)).json()
        assert (info["width"], info["height"], info["mpp"]) == (600, 400, pytest.approx(0.5))
        dzi = await client.get("/api/slides/scan-a/slide.dzi", headers=h)
        assert dzi.status == 200 and 'Width="600"' in await dzi.text()
        tile = await client.get(
            "/api/slides/scan-a/slide_files/10/1_0.jpeg", params={"token": TOKEN}
        )
        assert tile.status == 200 and tile.content_type == "image/jpeg"
        assert (await tile.read())[:2] == b"\xff\xd8"
        for path in (
            "/api/slides/scan-a/slide_files/10/9_9.jpeg",
            "/api/slides/nope/slide.dzi",
            "/api/slides/scan-a/secret.txt",
            "/api/slides/..%2F..%2Fetc/slide.dzi",
        ):
            r = await client.get(path, headers=h)
            assert r.status == 404, path
            assert (await r.json())["error"]
        report = await client.get("/api/slides/scan-a/report.json", headers=h)
        assert (await report.json())["tiles_total"] == 2
        state = await (await client.get("/api/state", headers=h)).json()
        assert state["viewer"] is False  # no asset in this folder: the page says so
        r = await client.get("/vendor/openseadragon/openseadragon.min.js", headers=h)
        assert r.status == 404 and "./deepaf" in (await r.json())["error"]

    _run(scans_root, check, asset_dir=tmp_path / "no-asset")


def test_without_a_token_only_loopback_hosts_and_same_origin_requests_pass(scans_root):
    async def check(client, _bridge, _dash):
        assert (await client.get("/api/state")).status == 200
        r = await client.get("/api/state", headers={"Host": "attacker.example"})
        assert r.status == 403
        r = await client.post("/api/estop", headers={"Origin": "http://attacker.example"})
        assert r.status == 403

    _run(scans_root, check, token=None)
