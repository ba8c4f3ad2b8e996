// DeepAf dashboard: live view over one WebSocket (JSON events + newest JPEG frame), commands
// as JSON POSTs, scans with a live tile map, and the OpenSeadragon deep-zoom viewer.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
const $ = (id) => document.getElementById(id);
const S = { clientId: null, config: null, pose: null, tiles: [], status: null, region: null,
  frames: 0, latencies: [], fpsTimes: [], decoding: false, pending: null, viewer: null, mpp: null };
window.deepaf = S;  // for tests and the bench

function say(text, kind) { const m = $("msg"); m.textContent = text; m.className = kind || ""; }
const um = (m) => (m * 1e6).toFixed(1) + " um";
const mm = (m) => (m * 1e3).toFixed(3) + " mm";

async function api(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers["X-DeepAf-Token"] = token;
  if (S.clientId) headers["X-Client-Id"] = S.clientId;
  const r = await fetch(path, { method: body === undefined ? "GET" : "POST", headers,
    body: body === undefined ? undefined : JSON.stringify(body) });
  const type = r.headers.get("Content-Type") || "";
  if (type.startsWith("application/json")) {
    const j = await r.json(); j.httpStatus = r.status; return j;
  }
  return { ok: r.ok, httpStatus: r.status, blob: await r.blob(), headers: r.headers };
}
function report(j, what) {
  if (j.ok) say(what + ": " + (j.message || "done"), "ok");
  else say(what + " refused (" + j.httpStatus + "): " + (j.error || j.message || j.status), "error");
  return j;
}

// ---- live view -------------------------------------------------------------------------
function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" + q);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { $("conn").textContent = "live"; $("conn").className = "badge ok"; };
  ws.onclose = () => { $("conn").textContent = "offline"; $("conn").className = "badge bad";
    S.clientId = null; setTimeout(connect, 1000); };
  ws.onmessage = (ev) => { if (typeof ev.data === "string") onEvent(JSON.parse(ev.data)); else onFrame(ev.data); };
}
function onFrame(buf) {
  const n = new DataView(buf).getUint32(0);
  const meta = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
  const blob = new Blob([new Uint8Array(buf, 4 + n)], { type: "image/jpeg" });
  if (S.decoding) { S.pending = [meta, blob]; return; }  // keep only the newest
  draw(meta, blob);
}
async function draw(meta, blob) {
  S.decoding = true;
  try {
    const bmp = await createImageBitmap(blob);
    const c = $("live");
    if (c.width !== bmp.width || c.height !== bmp.height) { c.width = bmp.width; c.height = bmp.height; }
    c.getContext("2d").drawImage(bmp, 0, 0);
    bmp.close();
    const now = Date.now() / 1000;
    S.frames += 1; S.lastMeta = meta;
    S.latencies.push(1000 * (now - meta.stamp)); if (S.latencies.length > 300) S.latencies.shift();
    S.fpsTimes.push(now); while (S.fpsTimes.length && now - S.fpsTimes[0] > 2) S.fpsTimes.shift();
    if (S.frames % 5 === 0) {
      $("fps").textContent = (S.fpsTimes.length / Math.max(0.5, now - S.fpsTimes[0])).toFixed(1) + " fps";
      const sorted = [...S.latencies].sort((a, b) => a - b);
      $("latency").textContent = "p50 " + sorted[Math.floor(sorted.length / 2)].toFixed(0) + " ms";
      const t = $("tissue");
      t.textContent = meta.tissue === null ? "tissue ?" : meta.tissue ? "tissue" : "no tissue";
      t.className = "badge " + (meta.tissue ? "ok" : "warn");
    }
  } finally {
    S.decoding = false;
    if (S.pending) { const [m, b] = S.pending; S.pending = null; draw(m, b); }
  }
}
function onEvent(e) {
  if (e.type === "hello") S.clientId = e.client_id;
  else if (e.type === "pose") showPose(e);
  else if (e.type === "prediction") showPrediction(e);
  else if (e.type === "scan_status") showStatus(e);
  else if (e.type === "tile") { S.tiles.push(e); drawMap(); }
  else if (e.type === "referenced") showReferenced(e.referenced);
  else if (e.type === "estop") say(e.message, e.engaged ? "error" : "ok");
  else if (e.type === "scan_result") { say("scan " + e.status + ": " + e.message, e.ok ? "ok" : "error"); loadScans(); }
}
function showPose(p) {
  S.pose = p; $("pose-x").textContent = mm(p.x); $("pose-y").textContent = mm(p.y);
  $("pose-z").textContent = um(p.z); drawMap();
}
function showPrediction(p) {
  $("pred-offset").textContent = p.offset === null ? "-" : (p.offset >= 0 ? "+" : "") + um(p.offset);
  $("pred-conf").textContent = p.confidence === null ? "-" : p.confidence.toFixed(2);
  $("pred-status").textContent = p.status_text + (p.message ? " (" + p.message + ")" : "");
}
function showReferenced(r) {
  const b = $("referenced"); b.textContent = r ? "referenced" : "NOT referenced"; b.className = "badge " + (r ? "ok" : "warn");
}

// ---- control -----------------------------------------------------------------------------
function jogSize() { return document.querySelector("input[name=jog-size]:checked").value; }
document.querySelectorAll("[data-jog]").forEach((b) => b.addEventListener("click", async () => {
  const [axis, dir] = b.dataset.jog.split(":");
  report(await api("/api/jog", { axis, direction: Number(dir), size: jogSize() }), "jog " + axis);
}));
$("btn-focus").onclick = async () => {
  say("focusing...");
  const j = report(await api("/api/focus", {}), "focus");
  if (j.ok && j.prediction) say("focus: moved " + um(j.prediction.offset) + " (confidence " + j.prediction.confidence.toFixed(2) + ")", "ok");
};
$("btn-capture").onclick = async () => {
  say("capturing...");
  const r = await api("/api/capture", {});
  if (!r.blob) { report(r, "capture"); return; }
  const name = /filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "");
  const a = document.createElement("a"); a.href = URL.createObjectURL(r.blob);
  a.download = name ? name[1] : "capture.png"; document.body.appendChild(a); a.click(); a.remove();
  S.lastCapture = { size: r.blob.size, name: a.download };
  say("capture: " + a.download + " (" + (r.blob.size / 1e6).toFixed(1) + " MB)", "ok");
};
$("btn-estop").onclick = async () => report(await api("/api/estop", { engage: true }), "emergency stop");
$("btn-reset").onclick = async () => report(await api("/api/estop", { engage: false }), "reset stop");

// ---- scans ---------------------------------------------------------------------------------
function regionInputs() { return ["x0", "y0", "x1", "y1"].map((k) => Number($("scan-" + k).value)); }
async function startScan(resume) {
  const name = $("scan-name").value.trim();
  S.tiles = []; S.zoom = false; $("btn-zoom").click();  // follow the scan, zoomed in
  report(await api("/api/scan", { region_mm: regionInputs(), method: $("scan-method").value,
    overlap: Number($("scan-overlap").value), name, resume }), resume ? "resume" : "scan");
}
$("btn-scan-start").onclick = () => startScan(false);
$("btn-scan-resume").onclick = () => startScan(true);
$("btn-scan-cancel").onclick = async () => report(await api("/api/scan/cancel", {}), "cancel");
function showStatus(s) {
  if (S.status && S.status.scan_id !== s.scan_id) S.tiles = [];
  S.status = s;
  $("scan-state").textContent = s.state + (s.scan_id ? " " + s.scan_id : "");
  $("tiles-done").textContent = s.tiles_done;
  $("tiles-left").textContent = s.tiles_total ? s.tiles_total - s.tiles_done : "-";
  $("eta").textContent = s.eta === null ? "-" : s.eta.toFixed(0) + " s";
  $("scan-msg").textContent = s.message ? "- " + s.message : "";
  $("scan-bar").max = s.tiles_total || 1; $("scan-bar").value = s.tiles_done;
}
function tileColour(t) {
  if (!t.has_tissue) return "#bbb";
  return t.focus_quality === "low" ? "#d32f2f" : "#2e7d32";
}
function mapBounds(L) {  // the whole stage, or (zoomed) the region with a margin
  if (!S.zoom) return [L.x_min, L.y_min, L.x_max, L.y_max];
  const r = regionInputs().map((v) => v * 1e-3), fov = S.config.field_of_view_m;
  const m = Math.max(r[2] - r[0], r[3] - r[1], fov[0], fov[1]) * 0.4;
  const cx = (r[0] + r[2]) / 2, cy = (r[1] + r[3]) / 2, h = Math.max(r[2] - r[0], r[3] - r[1]) / 2 + m;
  return [cx - h, cy - h, cx + h, cy + h];
}
function drawMap() {
  const c = $("stage-map"), g = c.getContext("2d"), L = S.config && S.config.limits;
  if (!L) return;
  const [bx0, by0, bx1, by1] = mapBounds(L);
  const W = c.width, H = c.height, s = Math.min(W / (bx1 - bx0), H / (by1 - by0));
  const X = (x) => (x - bx0) * s, Y = (y) => H - (y - by0) * s;  // y up
  g.clearRect(0, 0, W, H);
  g.strokeStyle = "#999"; g.strokeRect(X(L.x_min), Y(L.y_max), (L.x_max - L.x_min) * s, (L.y_max - L.y_min) * s);
  const r = regionInputs().map((v) => v * 1e-3);
  g.strokeStyle = "#1565c0"; g.setLineDash([4, 3]); g.strokeRect(X(r[0]), Y(r[3]), (r[2] - r[0]) * s, (r[3] - r[1]) * s); g.setLineDash([]);
  const fov = S.config.field_of_view_m;
  for (const t of S.tiles) {
    g.fillStyle = tileColour(t); const w = Math.max(3, fov[0] * s), h = Math.max(3, fov[1] * s);
    g.fillRect(X(t.x) - w / 2, Y(t.y) - h / 2, w - 1, h - 1);
    g.strokeStyle = "#fff"; g.strokeRect(X(t.x) - w / 2, Y(t.y) - h / 2, w - 1, h - 1);
  }
  if (S.pose) { g.strokeStyle = "#d32f2f"; g.beginPath(); g.arc(X(S.pose.x), Y(S.pose.y), 5, 0, 7); g.stroke(); }
  g.fillStyle = "#555"; g.font = "11px sans-serif";
  g.fillText((S.zoom ? "region" : "stage") + " " + ((bx1 - bx0) * 1e3).toFixed(2) + " mm wide; green ok, red low focus quality, grey empty", 4, 12);
  S.mapToStage = (px, py) => [bx0 + px / s, by0 + (H - py) / s];
}
$("btn-zoom").onclick = () => { S.zoom = !S.zoom; $("btn-zoom").textContent = S.zoom ? "whole stage" : "zoom to region"; drawMap(); };
(function pickRegion() {  // drag on the stage map: the region's corners
  const c = $("stage-map"); let start = null;
  const at = (ev) => { const b = c.getBoundingClientRect(); return S.mapToStage((ev.clientX - b.left) * c.width / b.width, (ev.clientY - b.top) * c.height / b.height); };
  c.addEventListener("mousedown", (ev) => { if (S.mapToStage) start = at(ev); });
  c.addEventListener("mouseup", (ev) => {
    if (!start) return; const end = at(ev);
    const v = [Math.min(start[0], end[0]), Math.min(start[1], end[1]), Math.max(start[0], end[0]), Math.max(start[1], end[1])];
    if (v[2] - v[0] > 1e-5 && v[3] - v[1] > 1e-5) ["x0", "y0", "x1", "y1"].forEach((k, i) => { $("scan-" + k).value = (v[i] * 1e3).toFixed(2); });
    start = null; drawMap();
  });
  ["x0", "y0", "x1", "y1"].forEach((k) => $("scan-" + k).addEventListener("input", drawMap));
})();
async function loadScans() {
  const j = await api("/api/scans");
  const body = $("scans").querySelector("tbody"); body.innerHTML = "";
  for (const s of j.scans || []) {
    const tr = document.createElement("tr");
    const dof = s.within_dof_pct === null || s.within_dof_pct === undefined ? "-" : s.within_dof_pct.toFixed(0) + " %";
    tr.innerHTML = "<td></td><td>" + (s.tiles_tissue ?? "-") + "/" + (s.tiles_total ?? "-") + "</td><td>" + dof + "</td><td></td>";
    tr.children[0].textContent = s.name + (s.complete === false ? " (incomplete)" : "");
    if (s.slide) { const b = document.createElement("button"); b.textContent = "view"; b.dataset.scan = s.name; b.onclick = () => openSlide(s.name); tr.children[3].appendChild(b); }
    body.appendChild(tr);
  }
}
$("btn-refresh").onclick = loadScans;

// ---- slide viewer ----------------------------------------------------------------------------
async function openSlide(name) {
  $("viewer-name").textContent = name; S.viewerName = name;
  const base = "/api/slides/" + encodeURIComponent(name);
  const info = await api(base + "/info");
  if (!info.width) { $("viewer-msg").textContent = info.error || "cannot open the slide"; return; }
  S.mpp = info.mpp;
  if (window.OSD_MISSING || typeof OpenSeadragon === "undefined") {
    $("viewer-msg").textContent = "Deep-zoom viewer unavailable: the OpenSeadragon asset is not installed (run ./deepaf once with network access to fetch it). Focus map and report below.";
  } else {
    $("viewer-msg").textContent = "";
    const source = base + "/slide.dzi" + q;
    if (!S.viewer) {
      S.viewer = OpenSeadragon({ id: "viewer", prefixUrl: "/vendor/openseadragon/images/", tileSources: source,
        showNavigator: true, maxZoomPixelRatio: 2, crossOriginPolicy: false });
      S.viewer.addHandler("animation", scaleBar); S.viewer.addHandler("open", scaleBar);
      S.viewer.addHandler("tile-loaded", () => { S.tilesLoaded = (S.tilesLoaded || 0) + 1; });
    } else S.viewer.open(source);
  }
  const fm = $("focus-map"); fm.src = base + "/focus_map.png" + q; fm.onerror = () => { fm.alt = "no focus map"; };
  const rep = await api(base + "/report.json");
  const t = $("report"); t.innerHTML = "";
  const rows = ["tiles_total", "tiles_tissue", "tiles_skipped", "tiles_below_quality", "within_dof_pct", "focus_method", "complete", "sim_seconds", "wall_seconds", "message"];
  for (const k of rows) if (k in rep) { const tr = document.createElement("tr"); tr.innerHTML = "<th></th><td></td>"; tr.children[0].textContent = k; const v = rep[k]; tr.children[1].textContent = typeof v === "number" ? +v.toFixed(3) : String(v); t.appendChild(tr); }
  const tr = document.createElement("tr"); tr.innerHTML = "<th>pixel size</th><td></td>"; tr.children[1].textContent = S.mpp ? S.mpp.toFixed(3) + " um" : "unknown"; t.appendChild(tr);
}
function scaleBar() {
  if (!S.viewer || !S.mpp || !S.viewer.world.getItemAt(0)) return;
  const zoom = S.viewer.viewport.viewportToImageZoom(S.viewer.viewport.getZoom(true));  // screen px per image px
  const umPerPx = S.mpp / zoom, target = 120 * umPerPx;
  const p = Math.pow(10, Math.floor(Math.log10(target))), f = target / p;
  const nice = (f >= 5 ? 5 : f >= 2 ? 2 : 1) * p;
  $("scalebar-bar").style.width = (nice / umPerPx).toFixed(0) + "px";
  $("scalebar-label").textContent = nice >= 1000 ? (nice / 1000) + " mm" : nice + " um";
}

// ---- start -------------------------------------------------------------------------------------
(async function init() {
  const st = await api("/api/state");
  if (st.httpStatus !== 200) { say("refused: " + (st.error || st.httpStatus), "error"); return; }
  S.config = st;
  $("scope").textContent = st.namespace + " - " + st.profile;
  $("profile-label").textContent = "profile " + st.profile + " (DoF " + um(st.jog.depth_of_field) + ")";
  $("step-fine").textContent = "(xy " + um(st.jog.xy_fine) + ", z " + um(st.jog.z_fine) + ")";
  $("step-coarse").textContent = "(xy " + um(st.jog.xy_coarse) + ", z " + um(st.jog.z_coarse) + ")";
  $("scan-method").innerHTML = st.focus_methods.map((m) => "<option value=\"" + m + "\">" + m + "</option>").join("");
  $("scan-name").value = "ui-" + new Date().toISOString().slice(0, 19).replace(/[-:T]/g, "");
  if (st.pose) showPose(st.pose);
  if (st.prediction) showPrediction(st.prediction);
  if (st.scan_status) showStatus(st.scan_status);
  if (st.referenced !== null) showReferenced(st.referenced);
  S.tiles = st.tiles || [];
  if (!st.viewer) $("viewer-msg").textContent = "Deep-zoom viewer unavailable: the OpenSeadragon asset is not installed (./deepaf fetches it at set-up).";
  drawMap(); loadScans(); connect();
})();
