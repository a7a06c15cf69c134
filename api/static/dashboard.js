// EnerLink dashboard: the fleet at a glance, and for one meter live power (WebSocket), history
// at 1m/5m/1h/1d and recent events. Plain JS, one library (uPlot, vendored). Talks only to this
// server's API: GET /meters, /telemetry/latest/data, /telemetry/history/{id}, /meters/{id}/health,
// /meters/{id}/completeness, /events, WS /ws/telemetry; the simulated fleet: GET /simulation,
// POST /simulation/start|stop; the energy panels are energy.js's.
"use strict";

(() => {
  const TOKEN_KEY = "enerlink.token";
  const SELECTED_KEY = "enerlink.meter";
  const POLL_MS = 10000;
  const LIVE_POINTS = 720; // one hour at 5 s
  const HISTORY = {
    "1m": 6 * 3600,
    "5m": 24 * 3600,
    "1h": 7 * 86400,
    "1d": 90 * 86400,
  };
  const HISTORY_FIELDS = ["net_solar_solar_power", "net_solar_load_power", "net_grid_net_power", "battery_soc"];
  const COLORS = { solar: "#e0a100", load: "#d9480f", battery: "#2f9e44", grid: "#1c7ed6", soc: "#868e96" };
  const HEALTH_COLORS = { rssi: "#7048e8", rssiMin: "#b197fc", heap: "#0ca678", reboots: "#c92a2a" };

  const $ = (selector) => document.querySelector(selector);
  const meters = new Map(); // meterId -> {info, message, row}
  let selected = localStorage.getItem(SELECTED_KEY);
  let liveChart = null;
  let historyChart = null;
  let healthChart = null;
  let live = { t: [], solar: [], load: [], battery: [], grid: [] };
  let socket = null;
  let socketRetry = 0;

  // --- token and HTTP ---------------------------------------------------------------------------
  function token() {
    return localStorage.getItem(TOKEN_KEY) || "";
  }

  function takeTokenFromUrl() {
    const url = new URL(window.location.href);
    const given = url.searchParams.get("token");
    if (given !== null) {
      if (given) localStorage.setItem(TOKEN_KEY, given);
      else localStorage.removeItem(TOKEN_KEY);
      url.searchParams.delete("token");
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
  }

  class HttpError extends Error {
    constructor(status, detail) {
      super(`HTTP ${status}: ${detail}`);
      this.status = status;
    }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    const response = await fetch(path, { headers });
    if (response.status === 401) {
      showAlert("This server needs an API token: enter it above (or open /?token=…).");
      throw new HttpError(401, "unauthorised");
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        detail = JSON.stringify((await response.json()).detail);
      } catch (_) {
        /* not JSON */
      }
      throw new HttpError(response.status, detail);
    }
    return response.json();
  }

  async function post(path, body) {
    const headers = { Accept: "application/json", "Content-Type": "application/json" };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body || {}) });
    let payload = null;
    try {
      payload = await response.json();
    } catch (_) {
      /* not JSON */
    }
    if (!response.ok) {
      let detail = payload && payload.detail !== undefined ? payload.detail : response.statusText;
      if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
      throw new HttpError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return payload;
  }

  function showAlert(text) {
    const alert = $("#alert");
    alert.textContent = text;
    alert.hidden = !text;
  }

  // --- values -------------------------------------------------------------------------------------
  function toWatts(value, units) {
    if (typeof value !== "number" || !Number.isFinite(value)) return null;
    const unit = (units && units.power) || "mW";
    if (unit === "W") return value;
    if (unit === "kW") return value * 1000;
    return value / 1000; // the firmware reports mW
  }

  function formatPower(watts) {
    if (watts === null || watts === undefined) return "–";
    const magnitude = Math.abs(watts);
    if (magnitude >= 1000) return `${(watts / 1000).toFixed(2)} kW`;
    return `${watts.toFixed(2)} W`;
  }

  function flows(message) {
    const data = (message && message.data) || {};
    const units = message && message.units;
    const netSolar = data.net_solar || {};
    const netGrid = data.net_grid || {};
    const solar = toWatts(netSolar.solar_power ?? (data.solar_output || {}).power, units);
    const load = toWatts(netSolar.load_power ?? (data.load_smart_mtr || {}).power, units);
    const grid = toWatts(netGrid.net_power, units); // export - import: negative = importing
    const battery = solar !== null && load !== null && grid !== null ? solar - load - grid : null;
    const soc = typeof (data.battery || {}).soc === "number" ? data.battery.soc : null;
    return { solar, load, grid, battery, soc };
  }

  function parseTime(value) {
    if (typeof value === "number") return value;
    const parsed = Date.parse(value);
    return Number.isNaN(parsed) ? null : parsed;
  }

  function ago(ms) {
    if (!ms) return "never";
    const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (seconds < 90) return `${seconds} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} d ago`;
  }

  // --- fleet table --------------------------------------------------------------------------------
  function entry(meterId) {
    let item = meters.get(meterId);
    if (!item) {
      item = { info: { meter_id: meterId, online: null, last_seen_ms: null }, message: null, row: null };
      meters.set(meterId, item);
    }
    return item;
  }

  function cell(row, name, text, title) {
    const td = row.querySelector(`td.${name}`);
    td.textContent = text;
    if (title !== undefined) td.title = title;
  }

  function renderRow(meterId) {
    const item = entry(meterId);
    const body = $("#fleet tbody");
    if (!item.row) {
      item.row = document.createElement("tr");
      item.row.dataset.meterId = meterId;
      for (const name of ["meter", "state", "seen", "solar num", "load num", "battery num", "soc num", "grid num"]) {
        const td = document.createElement("td");
        td.className = name;
        item.row.appendChild(td);
      }
      item.row.addEventListener("click", () => select(meterId));
      const rows = Array.from(body.children);
      const before = rows.find((row) => row.dataset.meterId > meterId);
      body.insertBefore(item.row, before || null);
    }
    const f = flows(item.message);
    const online = item.info.online;
    const seen = item.info.last_seen_ms || (item.message && parseTime(item.message.datetime));
    cell(item.row, "meter", meterId);
    cell(item.row, "state", online === null ? "?" : online ? "online" : "offline");
    item.row.querySelector("td.state").dataset.state = online === null ? "unknown" : online ? "online" : "offline";
    cell(item.row, "seen", ago(seen), seen ? new Date(seen).toISOString() : "");
    cell(item.row, "solar", formatPower(f.solar));
    cell(item.row, "load", formatPower(f.load));
    const direction = f.battery === null ? "" : f.battery > 0 ? " ↑" : f.battery < 0 ? " ↓" : "";
    cell(item.row, "battery", formatPower(f.battery) + direction, "positive: charging");
    cell(item.row, "soc", f.soc === null ? "–" : `${f.soc.toFixed(1)} %`);
    let grid = formatPower(f.grid);
    if (f.grid !== null && Math.abs(f.grid) >= 0.005) {
      grid = f.grid < 0 ? `import ${formatPower(-f.grid)}` : `export ${formatPower(f.grid)}`;
    }
    cell(item.row, "grid", grid);
    item.row.classList.toggle("selected", meterId === selected);
    $("#fleet-empty").hidden = meters.size > 0;
    $("#fleet-count").textContent = `(${meters.size})`;
  }

  function asList(payload, key) {
    if (Array.isArray(payload)) return payload;
    if (payload && Array.isArray(payload[key])) return payload[key];
    if (payload && typeof payload === "object") return Object.values(payload);
    return [];
  }

  function latestMessages(payload) {
    // {meterId: message}, [message], or {meters|data: ...}
    if (payload && typeof payload === "object" && !Array.isArray(payload)) {
      for (const key of ["data", "meters", "items"]) {
        if (payload[key] && typeof payload[key] === "object") return latestMessages(payload[key]);
      }
    }
    return asList(payload, "data").filter((m) => m && typeof m === "object" && m.meterId);
  }

  async function refreshFleet() {
    const [infos, latest] = await Promise.all([api("/meters"), api("/telemetry/latest/data")]);
    for (const info of asList(infos, "meters")) {
      if (!info || !info.meter_id) continue;
      entry(info.meter_id).info = info;
    }
    for (const message of latestMessages(latest)) {
      const item = entry(message.meterId);
      if (!item.message || parseTime(message.datetime) >= parseTime(item.message.datetime)) item.message = message;
    }
    for (const meterId of meters.keys()) renderRow(meterId);
    if (selected && meters.has(selected) && !liveChart) select(selected);
    showAlert("");
  }

  // --- live stream --------------------------------------------------------------------------------
  function setConnection(state, text) {
    const pill = $("#connection");
    pill.dataset.state = state;
    pill.textContent = text;
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const query = token() ? `?token=${encodeURIComponent(token())}` : "";
    socket = new WebSocket(`${scheme}://${window.location.host}/ws/telemetry${query}`);
    socket.addEventListener("open", () => {
      socketRetry = 0;
      setConnection("live", "live");
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      if (!message || message.type === "ping" || !message.meterId) return;
      onMessage(message);
    });
    socket.addEventListener("close", () => {
      socket = null;
      setConnection("down", "reconnecting…");
      socketRetry += 1;
      const delay = Math.min(30000, 500 * 2 ** Math.min(socketRetry, 6)) * (0.5 + Math.random() / 2);
      window.setTimeout(connect, delay);
    });
  }

  function onMessage(message) {
    const item = entry(message.meterId);
    const when = parseTime(message.datetime);
    if (!item.message || when >= parseTime(item.message.datetime)) item.message = message;
    item.info = { ...item.info, online: true, last_seen_ms: Math.max(item.info.last_seen_ms || 0, when || 0) };
    renderRow(message.meterId);
    if (message.meterId === selected) {
      appendLive(message);
      renderMeterState();
    }
  }

  // --- charts -------------------------------------------------------------------------------------
  function chartWidth(element) {
    return Math.max(320, element.clientWidth || 800);
  }

  function powerSeries() {
    return [
      {},
      { label: "Solar", stroke: COLORS.solar, width: 2, value: (u, v) => formatPower(v) },
      { label: "Load", stroke: COLORS.load, width: 2, value: (u, v) => formatPower(v) },
      { label: "Battery", stroke: COLORS.battery, width: 2, value: (u, v) => formatPower(v) },
      { label: "Grid (export − import)", stroke: COLORS.grid, width: 2, value: (u, v) => formatPower(v) },
    ];
  }

  function makeLiveChart() {
    const element = $("#live-chart");
    element.textContent = "";
    live = { t: [], solar: [], load: [], battery: [], grid: [] };
    liveChart = new uPlot(
      {
        width: chartWidth(element),
        height: 260,
        series: powerSeries(),
        axes: [{}, { label: "W", size: 70 }],
        scales: { x: { time: true, range: (u, min, max) => [Math.min(min, max - 120), max] } }, // >= 2 min wide
      },
      [[], [], [], [], []],
      element,
    );
  }

  function appendLive(message) {
    const when = parseTime(message.datetime);
    if (when === null || !liveChart) return;
    const f = flows(message);
    const t = when / 1000;
    // keep the series ordered by time (late messages slot in), bounded in length
    let index = live.t.length;
    while (index > 0 && live.t[index - 1] > t) index -= 1;
    if (index > 0 && live.t[index - 1] === t) return; // a redelivery
    for (const [key, value] of [["t", t], ["solar", f.solar], ["load", f.load], ["battery", f.battery], ["grid", f.grid]]) {
      live[key].splice(index, 0, value);
      if (live[key].length > LIVE_POINTS) live[key].shift();
    }
    liveChart.setData([live.t, live.solar, live.load, live.battery, live.grid]);
    liveChart.setLegend({ idx: live.t.length - 1 }); // the legend shows the newest values
  }

  function column(point, stem) {
    for (const name of [`${stem}_avg`, stem]) {
      if (typeof point[name] === "number") return point[name];
    }
    return null;
  }

  async function loadHistory() {
    const meterId = selected;
    const resolution = $("#resolution").value;
    const end = new Date();
    const start = new Date(end.getTime() - HISTORY[resolution] * 1000);
    const query = new URLSearchParams({
      resolution,
      start: start.toISOString(),
      end: end.toISOString(),
      fields: HISTORY_FIELDS.join(","),
    });
    const info = $("#history-info");
    let points = [];
    try {
      const result = await api(`/telemetry/history/${encodeURIComponent(meterId)}?${query}`);
      points = asList(result, "points");
      info.textContent = points.length === 1 ? "1 point" : `${points.length} points`;
    } catch (error) {
      info.textContent = error.status === 404 ? "no history yet" : `history unavailable (${error.message})`;
    }
    if (meterId !== selected) return;
    const units = (entry(meterId).message || {}).units;
    const t = [];
    const solar = [];
    const load = [];
    const battery = [];
    const grid = [];
    const soc = [];
    for (const point of points) {
      const when = parseTime(point.bucket);
      if (when === null) continue;
      const s = toWatts(column(point, "net_solar_solar_power"), units);
      const l = toWatts(column(point, "net_solar_load_power"), units);
      const g = toWatts(column(point, "net_grid_net_power"), units);
      t.push(when / 1000);
      solar.push(s);
      load.push(l);
      grid.push(g);
      battery.push(s !== null && l !== null && g !== null ? s - l - g : null);
      soc.push(column(point, "battery_soc"));
    }
    const element = $("#history-chart");
    if (historyChart) historyChart.destroy();
    element.textContent = "";
    historyChart = new uPlot(
      {
        width: chartWidth(element),
        height: 260,
        series: [
          ...powerSeries(),
          { label: "SOC", stroke: COLORS.soc, width: 1, dash: [4, 4], scale: "%", value: (u, v) => (v === null ? "–" : `${v.toFixed(1)} %`) },
        ],
        axes: [{}, { label: "W", size: 70 }, { scale: "%", side: 1, label: "SOC %", grid: { show: false } }],
        scales: {
          x: { time: true, range: () => [start.getTime() / 1000, end.getTime() / 1000] }, // the requested window
          "%": { range: [0, 100] },
        },
      },
      [t, solar, load, battery, grid, soc],
      element,
    );
  }

  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }

  function percent(ratio) {
    return typeof ratio === "number" ? `${(ratio * 100).toFixed(0)} %` : "–";
  }

  async function loadHealth() {
    const meterId = selected;
    const end = new Date();
    const start = new Date(end.getTime() - HISTORY[$("#resolution").value] * 1000);
    const query = new URLSearchParams({ start: start.toISOString(), end: end.toISOString() });
    const info = $("#health-info");
    const summary = $("#health-summary");
    let result = { points: [], events: [] };
    try {
      result = await api(`/meters/${encodeURIComponent(meterId)}/health?${query}`);
    } catch (error) {
      info.textContent = error.status === 404 ? "no health data yet" : `health unavailable (${error.message})`;
    }
    if (meterId !== selected) return;
    const points = asList(result, "points");
    const events = asList(result, "events");
    const t = [];
    const rssi = [];
    const rssiMin = [];
    const heap = [];
    const reboots = [];
    let rebootCount = 0;
    for (const point of points) {
      const when = parseTime(point.bucket);
      if (when === null) continue;
      t.push(when / 1000);
      rssi.push(typeof point.rssi_avg === "number" ? point.rssi_avg : null);
      rssiMin.push(typeof point.rssi_min === "number" ? point.rssi_min : null);
      heap.push(typeof point.free_heap_min === "number" ? point.free_heap_min / 1024 : null);
      reboots.push(point.reboots > 0 ? point.reboots : null);
      rebootCount += point.reboots || 0;
    }
    if (result.bucket) {
      info.textContent = `${plural(points.length, "point")} · ${result.bucket} · ${plural(rebootCount, "reboot")} · ${plural(events.length, "event")}`;
    }
    const last = points.length ? points[points.length - 1] : null;
    summary.textContent = last
      ? `latest: RSSI ${last.rssi_avg === null ? "–" : last.rssi_avg.toFixed(0)} dBm` +
        ` · free heap ${last.free_heap_min === null ? "–" : (last.free_heap_min / 1024).toFixed(0)} kB` +
        ` · sensors ${last.sensors_connected_min ?? "–"}/${last.sensors_total ?? "–"}` +
        ` · Wi-Fi down ${percent(last.wifi_disconnected_ratio)} · MQTT down ${percent(last.mqtt_disconnected_ratio)}` +
        (events.length ? ` · last event: ${events[events.length - 1].kind} at ${events[events.length - 1].at}` : "")
      : "";
    const element = $("#health-chart");
    if (healthChart) healthChart.destroy();
    element.textContent = "";
    healthChart = new uPlot(
      {
        width: chartWidth(element),
        height: 220,
        series: [
          {},
          { label: "RSSI avg", stroke: HEALTH_COLORS.rssi, width: 2, scale: "dBm", value: (u, v) => (v === null ? "–" : `${v.toFixed(1)} dBm`) },
          { label: "RSSI min", stroke: HEALTH_COLORS.rssiMin, width: 1, dash: [4, 4], scale: "dBm", value: (u, v) => (v === null ? "–" : `${v.toFixed(0)} dBm`) },
          { label: "Free heap min", stroke: HEALTH_COLORS.heap, width: 2, scale: "kB", value: (u, v) => (v === null ? "–" : `${v.toFixed(0)} kB`) },
          {
            label: "Reboots",
            stroke: HEALTH_COLORS.reboots,
            width: 0,
            scale: "n",
            points: { show: true, size: 8, fill: HEALTH_COLORS.reboots },
            value: (u, v) => (v === null ? "0" : String(v)),
          },
        ],
        axes: [
          {},
          { scale: "dBm", label: "dBm", size: 60 },
          { scale: "kB", side: 1, label: "kB", grid: { show: false }, size: 60 },
        ],
        scales: {
          x: { time: true, range: () => [start.getTime() / 1000, end.getTime() / 1000] },
          n: { range: (u, min, max) => [0, Math.max(1, max || 1) * 1.2] },
          // fixed-ish ranges: a 1 dB or 1 kB wobble should not fill the chart
          dBm: { range: (u, min, max) => [Math.min(-90, (min ?? -90) - 5), Math.max(-40, (max ?? -40) + 5)] },
          kB: { range: (u, min, max) => [0, Math.max(64, (max ?? 0) * 1.2)] },
        },
      },
      [t, rssi, rssiMin, heap, reboots],
      element,
    );
  }

  async function loadEvents() {
    const meterId = selected;
    const body = $("#events tbody");
    let events = [];
    try {
      events = asList(await api(`/events?meter_id=${encodeURIComponent(meterId)}`), "events");
    } catch (_) {
      events = [];
    }
    if (meterId !== selected) return;
    body.textContent = "";
    for (const event of events.slice(-50).reverse()) { // the API lists oldest first
      const row = document.createElement("tr");
      for (const value of [event.at, event.kind, event.severity || "", event.details ? JSON.stringify(event.details) : ""]) {
        const td = document.createElement("td");
        td.textContent = value === undefined || value === null ? "" : String(value);
        row.appendChild(td);
      }
      body.appendChild(row);
    }
    $("#events-empty").hidden = events.length > 0;
  }

  // --- completeness: last 24 h by hour, last 7 days ------------------------------------------------
  async function loadCompleteness() {
    const meterId = selected;
    const path = `/meters/${encodeURIComponent(meterId)}/completeness`;
    const end = new Date();
    const hourStart = new Date(Math.floor(end.getTime() / 3600000) * 3600000 - 23 * 3600000);
    let hours = null;
    let days = null;
    try {
      [hours, days] = await Promise.all([
        api(`${path}?${new URLSearchParams({ bucket: "1h", start: hourStart.toISOString() })}`),
        api(`${path}?bucket=1d`),
      ]);
    } catch (error) {
      if (meterId === selected) {
        $("#completeness-info").textContent =
          error.status === 404 ? "no data yet" : `completeness unavailable (${error.message})`;
      }
      return;
    }
    if (meterId !== selected) return;
    const threshold = hours.threshold;
    const byHour = new Map(asList(hours, "points").map((p) => [parseTime(p.bucket), p]));
    const strip = $("#completeness-hours");
    strip.textContent = "";
    for (let i = 0; i < 24; i += 1) {
      const at = hourStart.getTime() + i * 3600000;
      const point = byHour.get(at);
      const cellEl = document.createElement("span");
      const ratio = point ? point.completeness : null;
      cellEl.dataset.state = typeof ratio !== "number" ? "unknown" : ratio < threshold ? "low" : "ok";
      cellEl.title = `${new Date(at).toISOString().slice(0, 13)}:00Z · ` +
        (point ? `${point.received} received, ${point.expected ?? "?"} expected, ${point.missing ?? "?"} missing, ` +
          `${point.repaired ?? "?"} repaired` : "no data");
      strip.appendChild(cellEl);
    }
    const body = $("#completeness-days tbody");
    body.textContent = "";
    for (const point of asList(days, "points").slice().reverse()) {
      const row = document.createElement("tr");
      const share = typeof point.completeness === "number" ? `${(point.completeness * 100).toFixed(2)} %` : null;
      const values = [point.bucket.slice(0, 10), point.expected, point.received, point.repaired, point.missing, share];
      values.forEach((value, i) => {
        const td = document.createElement("td");
        td.textContent = value === null || value === undefined ? "–" : String(value);
        if (i > 0) td.className = "num";
        row.appendChild(td);
      });
      body.appendChild(row);
    }
    const total = hours.total || {};
    $("#completeness-info").textContent = typeof total.completeness === "number"
      ? `last 24 h: ${(total.completeness * 100).toFixed(2)} % · ${total.missing} missing · ${total.repaired} repaired`
      : "last 24 h: unknown (no seq)";
  }

  function renderMeterState() {
    const item = entry(selected);
    const pill = $("#meter-state");
    const online = item.info.online;
    pill.dataset.state = online === null ? "unknown" : online ? "online" : "offline";
    pill.textContent = online === null ? "?" : online ? "online" : "offline";
  }

  function select(meterId) {
    selected = meterId;
    localStorage.setItem(SELECTED_KEY, meterId);
    for (const [id, item] of meters) if (item.row) item.row.classList.toggle("selected", id === meterId);
    $("#meter-section").hidden = false;
    $("#meter-title").textContent = meterId;
    renderMeterState();
    makeLiveChart();
    const item = entry(meterId);
    if (item.message) appendLive(item.message);
    loadHistory();
    loadHealth();
    loadEvents();
    loadCompleteness();
    document.dispatchEvent(new CustomEvent("enerlink:meter", { detail: meterId })); // energy.js
  }

  // --- simulated fleet ---------------------------------------------------------------------------
  function renderSimulation(state) {
    const pill = $("#simulation-state");
    const label = !state.online ? "no fleet process" : state.running ? "running" : "stopped";
    pill.dataset.state = !state.online ? "offline" : state.running ? "running" : "stopped";
    pill.textContent = label;
    for (const [id, key] of [
      ["#simulation-meters", "meters"],
      ["#simulation-interval", "interval_s"],
      ["#simulation-speed", "speed"],
    ]) {
      const input = $(id);
      if (state[key] && document.activeElement !== input) input.value = state[key];
    }
    const scenarios = Object.entries(state.scenarios || {}).map(([name, n]) => `${name} ×${n}`);
    $("#simulation-info").textContent = state.online
      ? `${state.messages_sent} data messages sent · scenarios: ${scenarios.join(", ") || "none"}`
      : "start `enerlink up` or `enerlink edge --simulate` to control a simulated fleet here";
    $("#simulation-start").disabled = !state.online;
    $("#simulation-stop").disabled = !state.online || !state.running;
  }

  async function refreshSimulation() {
    renderSimulation(await api("/simulation"));
  }

  async function simulation(action) {
    const body = {};
    if (action === "start") {
      for (const [id, key] of [
        ["#simulation-meters", "meters"],
        ["#simulation-interval", "interval_s"],
        ["#simulation-speed", "speed"],
      ]) {
        const value = $(id).value.trim();
        if (value) body[key] = Number(value);
      }
    }
    try {
      renderSimulation(await post(`/simulation/${action}`, body));
      showAlert("");
      window.setTimeout(() => refreshFleet().catch(() => {}), 2000);
    } catch (error) {
      if (error.status === 401) showAlert("This server needs an API token: enter it above (or open /?token=…).");
      else showAlert(`Simulation ${action}: ${error.message}`);
    }
  }

  // --- start --------------------------------------------------------------------------------------
  function start() {
    takeTokenFromUrl();
    window.enerlink = { api }; // for energy.js
    $("#token-input").value = token();
    $("#token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("#token-input").value.trim();
      if (value) localStorage.setItem(TOKEN_KEY, value);
      else localStorage.removeItem(TOKEN_KEY);
      if (socket) socket.close();
      refreshFleet().catch(() => {});
    });
    $("#simulation-form").addEventListener("submit", (event) => {
      event.preventDefault();
      simulation("start");
    });
    $("#simulation-stop").addEventListener("click", () => simulation("stop"));
    const pollSimulation = () => refreshSimulation().catch(() => {});
    pollSimulation();
    window.setInterval(pollSimulation, POLL_MS);
    $("#resolution").addEventListener("change", () => {
      loadHistory();
      loadHealth();
    });
    const poll = () =>
      refreshFleet().catch((error) => {
        if (error.status !== 401) showAlert(`Cannot reach the API: ${error.message}`);
      });
    poll();
    window.setInterval(poll, POLL_MS);
    window.setInterval(() => {
      for (const meterId of meters.keys()) renderRow(meterId);
      $("#clock").textContent = new Date().toISOString().slice(11, 19) + " UTC";
      if (selected && !$("#meter-section").hidden) loadEvents();
    }, POLL_MS);
    window.addEventListener("resize", () => {
      for (const [chart, element, height] of [
        [liveChart, $("#live-chart"), 260],
        [historyChart, $("#history-chart"), 260],
        [healthChart, $("#health-chart"), 220],
      ]) {
        if (chart) chart.setSize({ width: chartWidth(element), height });
      }
    });
    connect();
  }

  start();
})();
