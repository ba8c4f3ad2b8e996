"""The dashboard's web server (aiohttp): pages, JSON commands, the live WebSocket, DZI tiles.

A thin adapter: requests are checked (token, rate limit, input), then handed to the bridge
(`deepaf.ui.bridge.ScopeBridge`, or any object with the same methods) in worker threads; the
live WebSocket sends each client JSON events and only the newest JPEG frame (a slow client
skips frames instead of falling behind).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from deepaf.client import Outcome, Status
from deepaf.ui import assets
from deepaf.ui.dzi import SlideCache, find_slide
from deepaf.ui.live import JogSteps, LatestSlot, Limits, parse_region_mm
from deepaf.ui.security import TOKEN_COOKIE, TOKEN_QUERY, RateLimiter, check_request

STATIC = Path(__file__).resolve().parent / "static"
SCAN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SCAN_FILES = {
    "report.json": "application/json",
    "focus_map.png": "image/png",
    "thumbnail.png": "image/png",
}
FOCUS_METHODS = ("deepaf", "deepaf_single", "stack", "focus_map", "fixed")
HTTP_STATUS = {
    Status.SUCCEEDED: 200,
    Status.FAILED: 409,
    Status.REJECTED: 409,
    Status.CANCELED: 409,
    Status.TIMED_OUT: 504,
    Status.UNAVAILABLE: 503,
}
#: Commands that are never rate-limited (stopping must always be possible).
UNLIMITED = frozenset({"/api/estop"})


@dataclass
class UiConfig:
    """What the server needs besides the bridge."""

    profile: str
    jog: JogSteps
    limits: Limits
    scans_root: Path
    token: str | None = None
    asset_dir: Path = field(default_factory=assets.default_asset_dir)
    rate: float = 5.0
    burst: int = 10
    namespace: str = ""
    field_of_view_m: tuple[float, float] = (1.57e-3, 1.18e-3)  # capture field [m] (the map)


class LiveClient:
    """One open live WebSocket: pending events and the newest frame."""

    def __init__(self, client_id: str, ws: web.WebSocketResponse) -> None:
        self.id, self.ws = client_id, ws
        self.events: deque[dict[str, Any]] = deque(maxlen=5000)
        self.frames = LatestSlot()
        self.wake = asyncio.Event()
        self.sent = 0
        self.dropped = 0


class Hub:
    """Fans frames and events out to the live clients (called on the event loop only)."""

    def __init__(self) -> None:
        self.clients: dict[str, LiveClient] = {}

    def frame(self, packed: bytes) -> None:
        for c in self.clients.values():
            c.frames.put(packed)
            c.wake.set()

    def event(self, event: dict[str, Any]) -> None:
        for c in self.clients.values():
            c.events.append(event)
            c.wake.set()


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"ok": False, "error": message, **extra}, status=status)


def _answer(outcome: Outcome, **extra: Any) -> web.Response:
    body = {"ok": outcome.ok, "status": outcome.status.value, "message": outcome.message, **extra}
    if not outcome.ok:
        body["error"] = outcome.message or outcome.status.value
    return web.json_response(body, status=HTTP_STATUS.get(outcome.status, 500))


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"ok": False, "error": "the body is not JSON"}),
            content_type="application/json",
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"ok": False, "error": "the body must be a JSON object"}),
            content_type="application/json",
        )
    return body


class Dashboard:
    """The aiohttp application around a bridge.

    Args:
        bridge: a ScopeBridge (or a stand-in with the same methods, in tests).
        config: profile, jog steps, limits, scans root, token, rate limit.
    """

    def __init__(self, bridge: Any, config: UiConfig) -> None:
        self.bridge, self.config = bridge, config
        self.hub = Hub()
        self.slides = SlideCache()
        self.limiter = RateLimiter(config.rate, config.burst)
        self._pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="ui-cmd")
        self._tile_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ui-tile")
        self.app = web.Application(middlewares=[self._guard], client_max_size=1 << 20)
        r = self.app.router
        r.add_get("/", self.index)
        r.add_static("/static/", STATIC, append_version=False)
        r.add_get("/vendor/openseadragon/{path:.+}", self.vendor)
        r.add_get("/api/state", self.state)
        r.add_get("/api/scans", self.scans)
        r.add_post("/api/jog", self.jog)
        r.add_post("/api/focus", self.focus)
        r.add_post("/api/capture", self.capture)
        r.add_post("/api/estop", self.estop)
        r.add_post("/api/scan", self.scan)
        r.add_post("/api/scan/cancel", self.scan_cancel)
        r.add_get("/api/slides/{name}/info", self.slide_info)
        r.add_get("/api/slides/{name}/slide.dzi", self.dzi)
        r.add_get(
            "/api/slides/{name}/slide_files/{level:\\d+}/{col:\\d+}_{row:\\d+}.jpeg", self.tile
        )
        r.add_get("/api/slides/{name}/{file}", self.scan_file)
        r.add_get("/ws", self.live)
        self.app.on_shutdown.append(self._on_shutdown)

    # -- middleware ------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Token / host check on every request; rate limit on commands."""
        why = check_request(self.config.token, request.headers, request.query, request.cookies)
        if why is not None:
            status = 403 if why.startswith(("cross-origin", "Host")) else 401
            return _error(status, why)
        if request.method == "POST" and request.path not in UNLIMITED:
            key = request.headers.get("X-Client-Id") or (request.remote or "?")
            wait = self.limiter.check(key)
            if wait is not None:
                return web.json_response(
                    {
                        "ok": False,
                        "error": f"too many commands: at most {self.config.rate:g}/s "
                        f"(burst {self.config.burst}); retry in {wait:.2f} s",
                    },
                    status=429,
                    headers={"Retry-After": str(max(1, round(wait)))},
                )
        return await handler(request)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _owner(self, request: web.Request) -> str:
        """The live connection a move belongs to (moves need one, so closing it stops them)."""
        owner = request.headers.get("X-Client-Id", "")
        if owner not in self.hub.clients:
            raise web.HTTPConflict(
                text=json.dumps(
                    {
                        "ok": False,
                        "error": "moves need an open live view "
                        "(X-Client-Id of a connected /ws): reload the page",
                    }
                ),
                content_type="application/json",
            )
        return owner

    # -- pages -----------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(STATIC / "index.html")
        token = request.query.get(TOKEN_QUERY)
        if self.config.token and token:  # checked by the guard: later requests carry the cookie
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response

    async def vendor(self, request: web.Request) -> web.StreamResponse:
        base = (self.config.asset_dir / "openseadragon").resolve()
        path = (base / request.match_info["path"]).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            return _error(
                404,
                f"{request.match_info['path']}: not in the OpenSeadragon asset "
                "(run ./deepaf once to fetch it)",
            )
        return web.FileResponse(path)

    async def state(self, _request: web.Request) -> web.Response:
        c = self.config
        return web.json_response(
            {
                **self.bridge.snapshot(),
                "namespace": c.namespace,
                "profile": c.profile,
                "jog": c.jog.to_dict(),
                "limits": c.limits.__dict__,
                "focus_methods": FOCUS_METHODS,
                "scans_root": str(c.scans_root),
                "viewer": assets.installed(c.asset_dir),
                "token_required": bool(c.token),
                "rate": c.rate,
                "field_of_view_m": c.field_of_view_m,
            }
        )

    # -- commands --------------------------------------------------------------------------
    async def jog(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            direction = int(body.get("direction", 0))
            delta = self.config.jog.delta(
                str(body.get("axis")), direction, str(body.get("size", "fine"))
            )
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        owner = self._owner(request)
        outcome = await self._run(self.bridge.jog, owner, delta)
        return _answer(outcome, delta=delta, position=_position(outcome))

    async def focus(self, request: web.Request) -> web.Response:
        owner = self._owner(request)
        outcome, prediction = await self._run(self.bridge.focus, owner)
        return _answer(outcome, prediction=prediction, position=_position(outcome))

    async def capture(self, _request: web.Request) -> web.StreamResponse:
        outcome, png = await self._run(self.bridge.capture_png)
        if png is None:
            return _answer(outcome)
        pos = getattr(outcome.result, "stage_position", None)
        name = (
            "capture.png"
            if pos is None
            else (f"capture_x{pos.x * 1e3:.3f}_y{pos.y * 1e3:.3f}_z{pos.z * 1e6:.1f}um.png")
        )
        return web.Response(
            body=png,
            content_type="image/png",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def estop(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        engage = bool(body.get("engage", True))
        return _answer(await self._run(self.bridge.set_estop, engage), engaged=engage)

    async def scan(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            rmin, rmax = parse_region_mm(body.get("region_mm"), self.config.limits)
        except ValueError as exc:
            return _error(400, str(exc))
        method = str(body.get("method") or "deepaf")
        if method not in FOCUS_METHODS:
            return _error(400, f"focus method {method!r} is not one of {', '.join(FOCUS_METHODS)}")
        name = str(body.get("name") or "")
        if not SCAN_NAME.match(name):
            return _error(
                400,
                f"scan name {name!r}: use letters, digits, '.', '_' or '-' "
                "(max 100, no leading dot)",
            )
        try:
            overlap = float(body.get("overlap", 0.1))
        except (TypeError, ValueError):
            return _error(400, "overlap must be a number in 0..0.5")
        if not 0.0 <= overlap <= 0.5:
            return _error(400, f"overlap {overlap} must be in 0..0.5")
        resume = bool(body.get("resume", False))
        out = self.config.scans_root / name
        if resume and not out.is_dir():
            return _error(400, f"nothing to resume: {name} does not exist under the scans root")
        outcome = await self._run(
            lambda: self.bridge.start_scan(
                region_min=rmin,
                region_max=rmax,
                output_dir=str(out),
                focus_method=method,
                overlap=overlap,
                resume=resume,
            )
        )
        return _answer(outcome, output_dir=str(out), name=name)

    async def scan_cancel(self, _request: web.Request) -> web.Response:
        return _answer(await self._run(self.bridge.cancel_scan))

    # -- scans and the slide viewer ----------------------------------------------------------
    def _scan_dir(self, name: str) -> Path:
        root = self.config.scans_root.resolve()
        path = (root / name).resolve() if SCAN_NAME.match(name) else None
        if path is None or not path.is_relative_to(root) or not path.is_dir():
            raise web.HTTPNotFound(
                text=json.dumps({"ok": False, "error": f"no scan {name!r}"}),
                content_type="application/json",
            )
        return path

    def _slide_path(self, name: str) -> Path:
        slide = find_slide(self._scan_dir(name))
        if slide is None:
            raise web.HTTPNotFound(
                text=json.dumps({"ok": False, "error": f"scan {name!r} has no slide.tiff"}),
                content_type="application/json",
            )
        return slide

    async def scans(self, _request: web.Request) -> web.Response:
        root = self.config.scans_root
        found = []
        for d in sorted(root.iterdir() if root.is_dir() else [], key=lambda p: p.name):
            if not d.is_dir() or not SCAN_NAME.match(d.name):
                continue
            slide, report = find_slide(d), d / "report.json"
            if slide is None and not report.is_file() and not (d / "scan.json").is_file():
                continue
            item: dict[str, Any] = {
                "name": d.name,
                "slide": slide is not None,
                "report": report.is_file(),
                "focus_map": (d / "focus_map.png").is_file(),
                "mtime": d.stat().st_mtime,
            }
            if report.is_file():
                try:
                    r = json.loads(report.read_text())
                    item.update(
                        {
                            k: r.get(k)
                            for k in (
                                "tiles_tissue",
                                "tiles_total",
                                "within_dof_pct",
                                "complete",
                                "focus_method",
                            )
                        }
                    )
                except (OSError, ValueError):
                    item["report_error"] = "unreadable report.json"
            found.append(item)
        found.sort(key=lambda i: -i["mtime"])
        return web.json_response({"root": str(root), "scans": found})

    async def slide_info(self, request: web.Request) -> web.Response:
        path = self._slide_path(request.match_info["name"])
        slide = await asyncio.get_running_loop().run_in_executor(
            self._tile_pool, self.slides.slide, path
        )
        w, h = slide.layout.width, slide.layout.height
        return web.json_response(
            {
                "name": request.match_info["name"],
                "file": path.name,
                "width": w,
                "height": h,
                "mpp": slide.mpp,
                "levels": len(slide.downsamples),
            }
        )

    async def dzi(self, request: web.Request) -> web.Response:
        path = self._slide_path(request.match_info["name"])
        slide = await asyncio.get_running_loop().run_in_executor(
            self._tile_pool, self.slides.slide, path
        )
        return web.Response(text=slide.layout.xml(), content_type="application/xml")

    async def tile(self, request: web.Request) -> web.Response:
        path = self._slide_path(request.match_info["name"])
        m = request.match_info
        level, col, row = int(m["level"]), int(m["col"]), int(m["row"])
        try:
            data = await asyncio.get_running_loop().run_in_executor(
                self._tile_pool, self.slides.tile, path, level, col, row
            )
        except ValueError as exc:
            return _error(404, str(exc))
        return web.Response(
            body=data, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
        )

    async def scan_file(self, request: web.Request) -> web.StreamResponse:
        name, file = request.match_info["name"], request.match_info["file"]
        if file not in SCAN_FILES:
            return _error(404, f"{file}: not one of {', '.join(SCAN_FILES)}")
        path = self._scan_dir(name) / file
        if not path.is_file():
            return _error(404, f"scan {name!r} has no {file}")
        return web.FileResponse(path, headers={"Content-Type": SCAN_FILES[file]})

    # -- live ------------------------------------------------------------------------------
    async def live(self, request: web.Request) -> web.WebSocketResponse:
        from deepaf.ui.bridge import new_client_id

        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=1 << 16)
        await ws.prepare(request)
        client = LiveClient(new_client_id(), ws)
        self.hub.clients[client.id] = client
        self.bridge.viewers = len(self.hub.clients)
        client.events.append({"type": "hello", "client_id": client.id})
        client.wake.set()
        sender = asyncio.create_task(self._send_loop(client))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and msg.data == "ping":
                    await ws.send_str('{"type":"pong"}')
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.hub.clients.pop(client.id, None)
            self.bridge.viewers = len(self.hub.clients)
            sender.cancel()
            # a closed tab never leaves the stage moving: cancel what it started
            await self._run(self.bridge.cancel_moves, client.id)
        return ws

    async def _send_loop(self, client: LiveClient) -> None:
        try:
            while not client.ws.closed:
                await client.wake.wait()
                client.wake.clear()
                while client.events:
                    await client.ws.send_str(json.dumps(client.events.popleft()))
                frame, dropped = client.frames.take()
                client.dropped += dropped
                if frame is not None:
                    await client.ws.send_bytes(frame)
                    client.sent += 1
        except (ConnectionResetError, RuntimeError):
            pass

    async def _on_shutdown(self, _app: web.Application) -> None:
        for c in list(self.hub.clients.values()):
            await c.ws.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._tile_pool.shutdown(wait=False, cancel_futures=True)


def _position(outcome: Outcome) -> dict[str, float] | None:
    pos = getattr(outcome.result, "position", None)
    return None if pos is None else {"x": pos.x, "y": pos.y, "z": pos.z}
