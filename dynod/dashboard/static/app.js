// The dynod dashboard: plain JavaScript over the control API, no build step, no outside requests.
// Routes live in the URL fragment (#/apps/NAME/metrics) so the server only ever serves files.
"use strict";

const TOKEN_KEY = "dynod-token";
const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
let timers = [];      // polling of the page on screen, cleared when the page changes
let aborters = [];    // streaming fetches (log tail), aborted likewise
let charts = [];      // uPlot instances, destroyed likewise

// --- the API -------------------------------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body, options = {}) {
  const headers = { "Authorization": "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    signal: options.signal, cache: "no-store",
  });
  if (response.status === 401) { showLogin("That token was not accepted: run `dynoctl dashboard` for the current one."); throw new ApiError(401, "unauthorized"); }
  if (options.stream) return response;
  const text = await response.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch (_) { data = text; } }
  if (!response.ok) throw new ApiError(response.status, (data && data.message) || `dynod answered ${response.status}`);
  return data;
}

// --- little DOM helpers ----------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function toast(message, bad = false) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = ""; }, 5000);
}

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h ago`;
  return `${Math.round(seconds / 86400)}d ago`;
}

function every(ms, fn) { fn(); timers.push(setInterval(fn, ms)); }

function reset() {
  timers.forEach(clearInterval); timers = [];
  aborters.forEach((a) => a.abort()); aborters = [];
  charts.forEach((c) => c.destroy()); charts = [];
}

function setCrumbs(...parts) {
  crumbs.replaceChildren(...parts.map((p, i) => i < parts.length - 1
    ? el("span", {}, el("a", { href: p[1] }, p[0]), " / ") : el("span", { "aria-current": "page" }, p[0])));
}

// The same confirmation the CLI asks for: the app's name typed back.
function confirmByName(text, name, action) {
  const dialog = document.getElementById("confirm");
  const input = document.getElementById("confirm-input");
  const ok = document.getElementById("confirm-ok");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-label").textContent = `Type ${name} to confirm`;
  input.value = "";
  ok.disabled = true;
  input.oninput = () => { ok.disabled = input.value !== name; };
  document.getElementById("confirm-cancel").onclick = () => dialog.close("cancel");
  dialog.onclose = () => { if (dialog.returnValue !== "cancel" && input.value === name) action(); };
  dialog.returnValue = "cancel";
  document.getElementById("confirm-form").onsubmit = () => { dialog.returnValue = "ok"; };
  dialog.showModal();
  input.focus();
}

// --- login ----------------------------------------------------------------------------------------

function showLogin(message) {
  reset();
  document.getElementById("logout").hidden = true;
  setCrumbs(["Log in"]);
  const input = el("input", { id: "token", type: "password", autocomplete: "off", required: true });
  main.replaceChildren(el("section", { class: "card narrow" },
    el("h1", {}, "Log in"),
    message ? el("p", { class: "bad" }, message) : null,
    el("p", {}, "Run ", el("code", {}, "dynoctl dashboard"), " on the host: it prints this page's address with its token."),
    el("form", { onsubmit: (e) => { e.preventDefault(); sessionStorage.setItem(TOKEN_KEY, input.value.trim()); location.hash = "#/apps"; route(); } },
      el("label", { for: "token" }, "Token"), input, el("button", { type: "submit" }, "Log in"))));
}

// --- apps -----------------------------------------------------------------------------------------

function stateOf(dynos) {
  if (!dynos.length) return ["idle", "no dynos"];
  const up = dynos.filter((d) => d.state === "up").length;
  if (dynos.some((d) => d.state === "crashed")) return ["bad", `${up}/${dynos.length} up, crashed`];
  if (up === dynos.length) return ["good", `${up}/${dynos.length} up`];
  return ["busy", `${up}/${dynos.length} up`];
}

async function appsPage() {
  setCrumbs(["Apps"]);
  const body = el("tbody");
  main.replaceChildren(el("section", { class: "card" },
    el("h1", {}, "Apps"),
    el("div", { class: "scroll" }, el("table", { class: "list" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "App"), el("th", { scope: "col" }, "State"),
        el("th", { scope: "col" }, "Release"), el("th", { scope: "col" }, "Released"))), body))));
  every(3000, async () => {
    const apps = await api("GET", "/apps");
    const rows = await Promise.all(apps.map(async (app) => {
      const dynos = await api("GET", `/apps/${encodeURIComponent(app.name)}/dynos`).catch(() => []);
      const [kind, text] = stateOf(dynos.filter((d) => d.type !== "run"));
      return el("tr", {},
        el("th", { scope: "row" }, el("a", { href: `#/apps/${app.name}` }, app.name)),
        el("td", {}, el("span", { class: `pill ${kind}` }, app.maintenance ? "maintenance" : text)),
        el("td", {}, app.current_release ? `v${app.current_release}` : "—"),
        el("td", {}, ago(app.released_at)));
    }));
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 4 }, "No apps yet: dynoctl apps:create NAME"))]));
  });
}

// --- one app --------------------------------------------------------------------------------------

const TABS = [["overview", "Overview"], ["activity", "Activity"], ["metrics", "Metrics"], ["logs", "Logs"], ["settings", "Settings"]];

async function appPage(name, tab) {
  setCrumbs(["Apps", "#/apps"], [name]);
  const path = `/apps/${encodeURIComponent(name)}`;
  let app;
  try { app = await api("GET", path); } catch (e) { main.replaceChildren(el("p", { class: "bad" }, e.message)); return; }
  const nav = el("nav", { class: "tabs", "aria-label": "App sections" },
    TABS.map(([id, label]) => el("a", { href: `#/apps/${name}/${id}`, "aria-current": id === tab ? "page" : null }, label)));
  const panel = el("div", { id: "panel" });
  main.replaceChildren(el("div", { class: "apphead" }, el("h1", {}, name),
    app.web_url ? el("a", { href: app.web_url, class: "quiet", rel: "noopener" }, "Open app") : null), nav, panel);
  ({ overview, activity, metrics: metricsTab, logs, settings })[tab](name, path, panel, app);
}

function overview(name, path, panel) {
  const formation = el("div", { class: "formation", "aria-live": "polite" });
  const dynoList = el("tbody");
  panel.replaceChildren(
    el("section", { class: "card" }, el("h2", {}, "Formation"), formation),
    el("section", { class: "card" }, el("div", { class: "row" }, el("h2", {}, "Dynos"),
      el("button", { type: "button", class: "quiet", onclick: async () => {
        await api("DELETE", `${path}/dynos`); toast("Restarting all dynos"); } }, "Restart all")),
      el("div", { class: "scroll" }, el("table", { class: "list", id: "dynos" },
        el("thead", {}, el("tr", {}, ["Dyno", "State", "Release", "Since", "Command"].map((h) => el("th", { scope: "col" }, h)))),
        dynoList))));
  let editing = false;
  every(2000, async () => {
    const [types, dynos] = await Promise.all([api("GET", `${path}/formation`), api("GET", `${path}/dynos`)]);
    if (!editing) {
      formation.replaceChildren(...(types.length ? types.map((t) => formationRow(path, t, (v) => { editing = v; })) : [el("p", {}, "No process types yet: deploy a Procfile.")]));
    }
    dynoList.replaceChildren(...dynos.map((d) => el("tr", { "data-dyno": d.name, "data-state": d.state },
      el("th", { scope: "row" }, d.name), el("td", {}, el("span", { class: `pill ${{ up: "good", crashed: "bad", starting: "busy" }[d.state] || "idle"}` }, d.state)),
      el("td", {}, `v${d.release.version}`), el("td", {}, ago(d.updated_at)), el("td", { class: "mono" }, d.command))));
    if (!dynos.length) dynoList.replaceChildren(el("tr", {}, el("td", { colspan: 5 }, "No dynos running.")));
  });
}

function formationRow(path, t, setEditing) {
  const id = `qty-${t.type}`;
  const input = el("input", { id, type: "number", min: 0, max: 100, value: t.quantity, inputmode: "numeric",
    onfocus: () => setEditing(true), onblur: () => setTimeout(() => setEditing(false), 300) });
  const save = async (quantity) => {
    try {
      await api("PATCH", `${path}/formation`, { updates: [{ type: t.type, quantity }] });
      toast(`Scaled ${t.type} to ${quantity}`);
    } catch (e) { toast(e.message, true); }
    setEditing(false);
  };
  return el("form", { class: "ptype", "data-type": t.type, onsubmit: (e) => { e.preventDefault(); save(Number(input.value)); } },
    el("div", {}, el("strong", {}, t.type), " ", el("span", { class: "size" }, t.size), el("div", { class: "mono" }, t.command)),
    el("div", { class: "scale" },
      el("button", { type: "button", class: "quiet", "aria-label": `One ${t.type} dyno fewer`, onclick: () => save(Math.max(0, t.quantity - 1)) }, "−"),
      el("label", { for: id, class: "sr" }, `${t.type} dynos`), input,
      el("button", { type: "button", class: "quiet", "aria-label": `One ${t.type} dyno more`, onclick: () => save(t.quantity + 1) }, "+"),
      el("button", { type: "submit" }, "Scale")));
}

async function activity(name, path, panel) {
  const list = el("ol", { class: "feed" });
  panel.replaceChildren(el("section", { class: "card" }, el("h2", {}, "Activity"),
    el("p", { class: "size" }, "Releases, scaling, restarts and crashes, newest first."), list));
  every(5000, async () => {
    const [releases, metrics] = await Promise.all([api("GET", `${path}/releases`),
      api("GET", `${path}/metrics?since=7d`).catch(() => ({ events: [] }))]);
    const others = metrics.events.filter((e) => !["deploy", "config", "rollback", "release"].includes(e.kind));
    const items = releases.map((r) => ({ at: Date.parse(r.created_at), order: r.version, release: r }))
      .concat(others.map((e) => ({ at: e.at * 1000, order: 0, event: e })))
      .sort((a, b) => (b.at - a.at) || (b.order - a.order)).slice(0, 100);
    list.replaceChildren(...items.map((item) => item.release ? releaseItem(path, item.release)
      : el("li", { class: "event" }, el("span", { class: `kind ${item.event.kind}` }, item.event.kind), " ", item.event.text,
        el("time", { datetime: new Date(item.at).toISOString() }, ago(new Date(item.at).toISOString())))));
  });
}

function releaseItem(path, r) {
  const status = r.current ? el("span", { class: "pill good" }, "current") : r.status !== "succeeded" ? el("span", { class: "pill bad" }, r.status) : null;
  const rollback = !r.current && r.status === "succeeded" && r.slug
    ? el("button", { type: "button", class: "quiet", "data-rollback": r.version, onclick: async () => {
      try { const made = await api("POST", `${path}/releases`, { rollback: r.version }); toast(`Rolled back to v${r.version}: now v${made.version}`); }
      catch (e) { toast(e.message, true); } } }, `Roll back to v${r.version}`) : null;
  return el("li", { class: "release", "data-version": r.version }, el("strong", {}, `v${r.version}`), " ", r.description, " ", status,
    el("time", { datetime: r.created_at }, ago(r.created_at)), rollback);
}

async function settings(name, path, panel) {
  const [config, domains, addons] = await Promise.all([api("GET", `${path}/config-vars`), api("GET", `${path}/domains`),
    api("GET", `${path}/addons`).catch(() => null)]);
  const rows = Object.keys(config).sort().map((key) => {
    const value = el("code", { class: "masked" }, "••••••••");
    let shown = false;
    return el("tr", {}, el("th", { scope: "row", class: "mono" }, key), el("td", {}, value),
      el("td", {}, el("button", { type: "button", class: "quiet", "aria-label": `Show ${key}`, onclick: (e) => {
        shown = !shown; value.textContent = shown ? config[key] : "••••••••"; value.className = shown ? "" : "masked";
        e.target.textContent = shown ? "Hide" : "Reveal"; } }, "Reveal")));
  });
  panel.replaceChildren(
    el("section", { class: "card" }, el("h2", {}, "Config vars"), rows.length
      ? el("div", { class: "scroll" }, el("table", { class: "list" }, el("tbody", {}, rows))) : el("p", {}, "No config vars.")),
    el("section", { class: "card" }, el("h2", {}, "Domains"), el("ul", {}, domains.map((d) => el("li", {}, d.hostname, " ", el("span", { class: "size" }, d.kind))))),
    el("section", { class: "card" }, el("h2", {}, "Add-ons"), addons === null ? el("p", {}, "This dynod has no add-ons.")
      : addons.length ? el("ul", {}, addons.map((a) => el("li", {}, a.name || a.id, " ", el("span", { class: "size" }, (a.plan && a.plan.name) || ""), " ",
        el("button", { type: "button", class: "quiet", onclick: () => confirmByName(`Remove ${a.name || a.id} and its data from ${name}?`, name, async () => {
          try { await api("DELETE", `${path}/addons/${encodeURIComponent(a.name || a.id)}`); toast("Add-on removed"); settings(name, path, panel); }
          catch (e) { toast(e.message, true); } }) }, "Remove")))) : el("p", {}, "No add-ons.")),
    el("section", { class: "card danger-zone" }, el("h2", {}, "Destroy app"),
      el("p", {}, "Stops every dyno and deletes the app, its releases, config vars and logs. This cannot be undone."),
      el("button", { type: "button", class: "danger", onclick: () => confirmByName(`Destroy ${name} for good?`, name, async () => {
        try { await api("DELETE", path); toast(`Destroyed ${name}`); location.hash = "#/apps"; } catch (e) { toast(e.message, true); } }) }, `Destroy ${name}`)));
}

// --- logs -----------------------------------------------------------------------------------------

function logs(name, path, panel) {
  const out = el("pre", { class: "logs", id: "log-lines", tabindex: 0, "aria-label": "Log lines", "aria-live": "off" });
  const ps = el("input", { id: "log-ps", placeholder: "web or web.1", size: 10 });
  const source = el("select", { id: "log-source" }, el("option", { value: "" }, "all"), el("option", { value: "app" }, "app"), el("option", { value: "dynod" }, "dynod"));
  const grep = el("input", { id: "log-grep", placeholder: "contains…", size: 12 });
  const follow = el("input", { id: "log-follow", type: "checkbox", checked: true });
  const status = el("span", { class: "size", role: "status" });
  let lines = [];
  const render = () => {
    const needle = grep.value.toLowerCase();
    out.textContent = lines.filter((l) => !needle || l.toLowerCase().includes(needle)).join("\n");
    if (follow.checked) out.scrollTop = out.scrollHeight;
  };
  const start = async () => {
    aborters.forEach((a) => a.abort()); aborters = [];
    lines = []; render();
    const controller = new AbortController(); aborters.push(controller);
    const query = new URLSearchParams({ tail: "true", lines: "200" });
    if (ps.value.trim()) query.set("ps", ps.value.trim());
    if (source.value) query.set("source", source.value);
    try {
      const response = await api("GET", `${path}/logs?${query}`, undefined, { stream: true, signal: controller.signal });
      if (!response.ok) { status.textContent = (await response.json()).message; return; }
      status.textContent = "live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let rest = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const parts = (rest + value).split("\n"); rest = parts.pop();
        lines.push(...parts); if (lines.length > 2000) lines = lines.slice(-1500);
        render();
      }
      status.textContent = "ended";
    } catch (e) { if (e.name !== "AbortError") status.textContent = e.message; }
  };
  panel.replaceChildren(el("section", { class: "card" }, el("h2", {}, "Logs"),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); start(); } },
      el("label", { for: "log-ps" }, "Dyno"), ps, el("label", { for: "log-source" }, "Source"), source,
      el("button", { type: "submit" }, "Apply"), el("label", { for: "log-grep" }, "Filter"), grep,
      el("label", { class: "check" }, follow, " Follow"), status), out));
  grep.addEventListener("input", render);
  start();
}

// --- metrics --------------------------------------------------------------------------------------

const COLORS = { p50: "#2f7d32", p95: "#c77700", p99: "#c62828", max: "#6a1b9a", "2xx": "#2f7d32", "3xx": "#1565c0",
  "4xx": "#c77700", "5xx": "#c62828", rss: "#1565c0", swap: "#c62828", quota: "#757575", load: "#6a1b9a" };
const MiB = 1024 * 1024;

// A chart fills its own figure (one column on a phone, two on a desktop).
function chartWidth(figure) { return Math.max(220, figure.clientWidth - 18); }

// Deploys, config changes, scaling and restarts as dashed vertical lines (Heroku's annotations).
// An event is drawn at the start of its slot, so one in the minute in progress is still on the chart.
function annotations(step) {
  return { hooks: { draw: [(u) => {
    const ctx = u.ctx;
    ctx.save();
    for (const e of u.dynodEvents || []) {
      const x = u.valToPos(e.at - (e.at % step), "x", true);
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
      ctx.strokeStyle = { deploy: "#1565c0", rollback: "#c62828", config: "#6a1b9a", scale: "#2f7d32" }[e.kind] || "#9e9e9e";
      ctx.setLineDash([4, 4]); ctx.lineWidth = 1.5 * devicePixelRatio;
      ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
    }
    ctx.restore();
  }] } };
}

// Counts (requests, errors, restarts) are bars per slot, as Heroku draws them; times and sizes lines.
function chart(box, title, unit, series, xs, events, { bars = false, dots = true, min, step = 60 } = {}) {
  const holder = el("figure", { class: "chart", "data-chart": title }, el("figcaption", {}, title));
  box.append(holder);
  const barPaths = bars ? uPlot.paths.bars({ size: [0.9, 24], align: 1 }) : null;
  const opts = {
    width: chartWidth(holder), height: 190, plugins: [annotations(step)],
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [min ?? Math.min(0, lo ?? 0), Math.max(hi ?? 1, 1) * 1.1] } },
    cursor: { points: { size: 6 } },
    axes: [{ stroke: "#57606a", grid: { stroke: "#eaeef2" } },
      { stroke: "#57606a", grid: { stroke: "#eaeef2" }, size: 56, values: (u, vals) => vals.map((v) => v == null ? "" : `${+v.toFixed(1)}${unit}`) }],
    series: [{}].concat(series.map(([label, color]) => ({ label, stroke: color, width: bars ? 0 : 2, spanGaps: false,
      fill: bars ? color + "cc" : undefined, paths: barPaths || undefined, points: { show: !bars && dots, size: 5 },
      value: (u, v) => v == null ? "–" : `${+v.toFixed(1)}${unit}` }))),
  };
  const data = [xs].concat(series.map((s) => s[2]));
  const plot = new uPlot(opts, data, holder);
  plot.dynodEvents = events;
  charts.push(plot);
  return plot;
}

function metricsTab(name, path, panel) {
  const known = el("datalist", { id: "m-types" });
  const type = el("input", { id: "m-type", value: "web", size: 8, list: "m-types", autocomplete: "off" });
  const since = el("select", { id: "m-since" }, ["1h", "6h", "24h", "7d"].map((s) => el("option", { value: s }, s)));
  const box = el("div", { class: "charts" });
  const note = el("p", { class: "size" });
  let shape = "";
  const draw = async () => {
    const m = await api("GET", `${path}/metrics?type=${encodeURIComponent(type.value.trim() || "web")}&since=${since.value}`);
    const xs = m.points.map((p) => p.t);
    const col = (f) => m.points.map(f);
    const rt = (k) => col((p) => p.response_ms[k]);
    const mem = (k, scale = MiB) => col((p) => p.memory ? p.memory[k] / scale : null);
    const perMinute = 60 / m.step;
    const codes = [...new Set(m.points.flatMap((p) => Object.keys(p.errors)))].sort();
    const specs = [
      ["Response time", "ms", [["p50", COLORS.p50, rt("p50")], ["p95", COLORS.p95, rt("p95")], ["p99", COLORS.p99, rt("p99")], ["max", COLORS.max, rt("max")]]],
      ["Throughput (requests/min)", "", ["2xx", "3xx", "4xx", "5xx"].map((k) => [k, COLORS[k], col((p) => p.status[k] * perMinute)]), { dots: false }],
      ["Errors", "", (codes.length ? codes : ["no errors"]).map((c, i) => [c, ["#c62828", "#c77700", "#6a1b9a", "#1565c0"][i % 4], col((p) => p.errors[c] || 0)]), { bars: true }],
      ["Memory (MB)", "", [["rss max", COLORS.rss, mem("rss_max")], ["rss mean", "#64b5f6", mem("rss_mean")], ["swap", COLORS.swap, mem("swap_max")], ["quota", COLORS.quota, mem("quota")]]],
      ["Dyno load", "", [["load max", COLORS.load, col((p) => p.load ? p.load.max : null)]]],
      ["Restarts and crashes", "", [["restarts", "#1565c0", col((p) => p.restarts)], ["crashes", "#c62828", col((p) => p.crashes)]], { bars: true }],
    ];
    const newShape = `${m.step}|` + specs.map(([title, , series]) => title + ":" + series.map((x) => x[0]).join(",")).join("|");
    if (newShape === shape && charts.length === specs.length) {
      // Same charts: new data in place (no flicker, the cursor and the scroll stay).
      specs.forEach(([, , series], i) => { charts[i].dynodEvents = m.events; charts[i].setData([xs].concat(series.map((x) => x[2]))); });
    } else {
      charts.forEach((c) => c.destroy()); charts = [];
      box.replaceChildren();
      for (const [title, unit, series, options] of specs) chart(box, title, unit, series, xs, m.events, { step: m.step, ...(options || {}) });
      shape = newShape;
    }
    known.replaceChildren(...m.types.map((t) => el("option", { value: t })));
    note.textContent = `${m.step / 60}-minute points; percentiles within ±${(m.percentile_error * 100).toFixed(1)}%; dashed lines: deploys (blue), rollbacks (red), config (purple), scaling (green). Types: ${m.types.join(", ") || "none yet"}.`;
  };
  panel.replaceChildren(el("section", { class: "card" }, el("h2", {}, "Metrics"),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); draw(); } },
      el("label", { for: "m-type" }, "Process type"), type, known, el("label", { for: "m-since" }, "Window"), since,
      el("button", { type: "submit" }, "Show")), note, box));
  since.addEventListener("change", draw);
  every(10000, () => draw().catch((e) => toast(e.message, true)));
}

// --- routing --------------------------------------------------------------------------------------

function route() {
  reset();
  const hash = location.hash.slice(1);
  if (hash.startsWith("token=")) {  // the address `dynoctl dashboard` prints
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(hash.slice(6)));
    history.replaceState(null, "", "#/apps");
  }
  if (!token()) { showLogin(); return; }
  document.getElementById("logout").hidden = false;
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const tab = TABS.some(([id]) => id === parts[2]) ? parts[2] : "overview";
  const page = parts[0] === "apps" && parts[1] ? appPage(parts[1], tab) : appsPage();
  Promise.resolve(page).catch((e) => { if (e.status !== 401) toast(e.message, true); });
  main.focus({ preventScroll: true });
}

document.getElementById("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showLogin(); });
window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (e) => { if (!(e.reason instanceof ApiError && e.reason.status === 401)) toast(String(e.reason && e.reason.message || e.reason), true); });
let resizeTimer;
window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => {
  charts.forEach((c) => c.setSize({ width: chartWidth(c.root.parentElement), height: 190 })); }, 150); });
route();
