// Energy panels: kWh per local hour (today) and per local day (the last 30 days) of grid import and
// export, solar, home load, battery charge and discharge, with self-consumption and self-sufficiency,
// for the whole fleet (GET /energy) and the chosen meter (GET /meters/{id}/energy). Hours and days
// are those of the server's ENERLINK_TIMEZONE, and the charts' time axes use that zone too.
// Calls go through dashboard.js (window.enerlink.api: the token); it announces the chosen meter
// with an "enerlink:meter" event.
"use strict";

(() => {
  const REFRESH_MS = 60000;
  const FLOWS = [
    ["grid_import", "Grid import", "#1c7ed6"],
    ["grid_export", "Grid export", "#74c0fc"],
    ["solar", "Solar", "#e0a100"],
    ["load", "Home load", "#d9480f"],
    ["battery_charge", "Battery charge", "#2f9e44"],
    ["battery_discharge", "Battery discharge", "#94d82d"],
  ];
  const RATIOS = [
    ["self_consumption", "Self-consumption", "#7048e8"],
    ["self_sufficiency", "Self-sufficiency", "#c2255c"],
  ];
  const RANGES = [
    ["today", "Today", "1h"],
    ["month", "Last 30 days", "1d"],
  ];

  function formatEnergy(kwh) {
    if (typeof kwh !== "number" || !Number.isFinite(kwh)) return "–";
    return `${kwh.toFixed(Math.abs(kwh) >= 100 ? 1 : 3)} kWh`;
  }

  function formatPercent(pct) {
    return typeof pct === "number" && Number.isFinite(pct) ? `${pct.toFixed(1)} %` : "–";
  }

  function build(panel) {
    if (panel.querySelector("table")) return;
    const table = document.createElement("table");
    table.className = "energy-summary";
    const head = table.createTHead().insertRow();
    for (const label of ["", ...FLOWS.map((f) => f[1]), ...RATIOS.map((r) => r[1])]) {
      const th = document.createElement("th");
      th.textContent = label;
      if (label) th.className = "num";
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const [key, label] of RANGES) {
      const row = body.insertRow();
      row.dataset.range = key;
      const th = document.createElement("th");
      th.textContent = label;
      row.appendChild(th);
      for (const [name] of [...FLOWS, ...RATIOS]) {
        const td = row.insertCell();
        td.className = `num ${name}`;
        td.textContent = "–";
      }
    }
    panel.appendChild(table);
    for (const [key, label] of [["hourly", "per hour, today"], ["daily", "per day, last 30 days"]]) {
      const caption = document.createElement("p");
      caption.className = "muted energy-caption";
      caption.textContent = `kWh ${label} (dashed: %)`;
      const chart = document.createElement("div");
      chart.className = `chart energy-${key}`;
      panel.append(caption, chart);
    }
  }

  function fill(panel, key, total) {
    const row = panel.querySelector(`tr[data-range="${key}"]`);
    for (const [name] of FLOWS) row.querySelector(`td.${name}`).textContent = formatEnergy(total[`${name}_kwh`]);
    for (const [name] of RATIOS) row.querySelector(`td.${name}`).textContent = formatPercent(total[`${name}_pct`]);
  }

  function chartWidth(element) {
    return Math.max(320, element.clientWidth || 800);
  }

  function zoned(zone) {
    try {
      uPlot.tzDate(new Date(), zone);
      return (ts) => uPlot.tzDate(new Date(ts * 1000), zone);
    } catch (_) {
      return undefined; // a zone this browser does not know: the browser's own
    }
  }

  function draw(panel, key, result) {
    const element = panel.querySelector(`.energy-${key}`);
    panel.charts = panel.charts || {};
    if (panel.charts[key]) panel.charts[key].destroy();
    element.textContent = "";
    const buckets = result.buckets || [];
    const data = [
      buckets.map((b) => Date.parse(b.start) / 1000),
      ...FLOWS.map(([name]) => buckets.map((b) => b[`${name}_kwh`])),
      ...RATIOS.map(([name]) => buckets.map((b) => b[`${name}_pct`])),
    ];
    const range = [Date.parse(result.start) / 1000, Date.parse(result.end) / 1000];
    panel.charts[key] = new uPlot(
      {
        width: chartWidth(element),
        height: 220,
        tzDate: zoned(result.timezone),
        series: [
          {},
          ...FLOWS.map(([, label, color]) => ({
            label,
            stroke: color,
            width: 2,
            points: { show: true, size: 5 },
            value: (u, v) => formatEnergy(v),
          })),
          ...RATIOS.map(([, label, color]) => ({
            label,
            stroke: color,
            width: 1,
            dash: [4, 4],
            scale: "%",
            value: (u, v) => formatPercent(v),
          })),
        ],
        axes: [{}, { label: "kWh", size: 70 }, { scale: "%", side: 1, label: "%", grid: { show: false } }],
        scales: { x: { time: true, range: () => range }, "%": { range: [0, 100] } },
      },
      data,
      element,
    );
  }

  async function load(panel) {
    const path = panel.dataset.path;
    const api = window.enerlink && window.enerlink.api;
    if (!path || !api) return;
    build(panel);
    const info = panel.querySelector(".energy-info");
    let results;
    try {
      results = await Promise.all(RANGES.map(([, , bucket]) => api(`${path}?bucket=${bucket}`)));
    } catch (error) {
      if (panel.dataset.path === path) {
        info.textContent = error.status === 404 ? "no energy data yet" : `energy unavailable (${error.message})`;
      }
      return;
    }
    if (panel.dataset.path !== path) return; // another meter was chosen meanwhile
    const [hourly, daily] = results;
    fill(panel, "today", hourly.total);
    fill(panel, "month", daily.total);
    info.textContent = `${hourly.timezone} · ${hourly.buckets.length} h today · ${daily.buckets.length} d`;
    draw(panel, "hourly", hourly);
    draw(panel, "daily", daily);
  }

  function panels() {
    return [document.getElementById("fleet-energy"), document.getElementById("meter-energy")].filter(Boolean);
  }

  document.addEventListener("enerlink:meter", (event) => {
    const panel = document.getElementById("meter-energy");
    if (!panel) return;
    panel.dataset.path = `/meters/${encodeURIComponent(event.detail)}/energy`;
    load(panel);
  });

  window.addEventListener("load", () => {
    const fleet = document.getElementById("fleet-energy");
    if (fleet) {
      fleet.dataset.path = "/energy";
      load(fleet);
    }
    window.setInterval(() => panels().forEach(load), REFRESH_MS);
  });

  window.addEventListener("resize", () => {
    for (const panel of panels()) {
      for (const [key, chart] of Object.entries(panel.charts || {})) {
        chart.setSize({ width: chartWidth(panel.querySelector(`.energy-${key}`)), height: 220 });
      }
    }
  });
})();
