// Meridian dashboard: polls the admin API every 2 s and keeps the page in step, without
// reloading and without moving what is already on screen.
//
// Rules this file keeps:
// - Data goes into the page with textContent (or attributes), never as markup.
// - The admin token lives in sessionStorage and travels only in the Authorization header.
// - Elements are updated in place, keyed by name/id, so that nothing jumps while polling.
// - A missing endpoint (an older Meridian without /api/database/metrics) blanks only the
//   part that needs it.

"use strict";

(function () {
  const POLL_MS = 2000;
  const REQUEST_TIMEOUT_MS = 5000;
  const STALE_MS = 7000;
  const WINDOW_MS = 5 * 60 * 1000;
  const TOKEN_KEY = "meridian.adminToken";
  const READS_NEED_TOKEN_KEY = "meridian.readsNeedToken";
  const SERIES_COLOURS = ["#58a6ff", "#bc8cff", "#39c5cf", "#ffa657", "#f778ba", "#e3b341", "#7ee787", "#a5d6ff"];
  // The same step has the same colour in every run; unknown steps take the spare colours.
  const PHASE_COLOURS = {
    pause: "#8d99a8",
    fence: "#bc8cff",
    replay: "#39c5cf",
    promote: "#58a6ff",
    verify: "#79c0ff",
    publish: "#7ee787",
    repoint: "#e3b341",
    demote: "#ffa657",
    rejoin: "#f778ba",
  };
  const SPARE_PHASE_COLOURS = ["#d2a8ff", "#56d4dd", "#ff9bce", "#a5d6ff"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  const state = {
    health: null,
    status: null,
    alerts: [],
    history: [],
    // node name -> samples, oldest first: {t, ok, latency, lagBytes, lagSeconds}
    samples: new Map(),
    metrics: "loading", // loading | ok | absent | error | unauthorized
    metricsFull: true,
    lastOk: 0,
    lastError: null,
    unauthorized: false,
    skewMs: 0, // server clock minus this browser's clock
    colours: new Map(),
    timer: null,
    polling: false,
    pollAgain: false,
    tokenDismissed: false, // the read-token dialog was closed without a token: ask via the banner
  };

  // ---------- Small helpers ----------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
    return node;
  }

  function setText(node, text) {
    const value = text === null || text === undefined ? "" : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function setData(node, name, value) {
    const text = value === null || value === undefined ? "" : String(value);
    if (node.dataset[name] !== text) node.dataset[name] = text;
  }

  // Brings `container`'s children in line with `items`, reusing the element of each key.
  function reconcile(container, items, key, create, update) {
    const existing = new Map();
    for (const child of Array.from(container.children)) {
      if (child.dataset.key !== undefined) existing.set(child.dataset.key, child);
      else child.remove();
    }
    let previous = null;
    for (const item of items) {
      const k = String(key(item));
      let node = existing.get(k);
      if (node) existing.delete(k);
      else {
        node = create(item);
        node.dataset.key = k;
      }
      update(node, item);
      const expected = previous ? previous.nextSibling : container.firstChild;
      if (expected !== node) container.insertBefore(node, expected);
      previous = node;
    }
    for (const node of existing.values()) node.remove();
  }

  function serverNow() {
    return Date.now() + state.skewMs;
  }

  // ---------- Formatting ----------

  function humanBytes(bytes) {
    if (bytes === null || bytes === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = Number(bytes);
    let unit = 0;
    while (Math.abs(value) >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
    return value.toFixed(digits) + " " + units[unit];
  }

  function humanSeconds(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Number(seconds);
    if (s < 10) return s.toFixed(2) + " s";
    if (s < 60) return s.toFixed(1) + " s";
    const minutes = Math.floor(s / 60);
    if (minutes < 60) return minutes + "m " + String(Math.floor(s % 60)).padStart(2, "0") + "s";
    return Math.floor(minutes / 60) + "h " + String(minutes % 60).padStart(2, "0") + "m";
  }

  function humanMs(ms) {
    if (ms === null || ms === undefined) return "—";
    const v = Number(ms);
    if (v < 10) return v.toFixed(2) + " ms";
    if (v < 100) return v.toFixed(1) + " ms";
    return Math.round(v) + " ms";
  }

  function humanDuration(ms) {
    if (ms === null || ms === undefined) return "—";
    const v = Number(ms);
    if (v < 1000) return Math.round(v) + " ms";
    if (v < 60000) return (v / 1000).toFixed(v < 10000 ? 2 : 1) + " s";
    return humanSeconds(v / 1000);
  }

  function ago(ms) {
    if (!ms) return "";
    const seconds = Math.max(0, Math.round((serverNow() - ms) / 1000));
    if (seconds < 5) return "just now";
    if (seconds < 60) return seconds + " s ago";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min ago";
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + " h ago";
    return Math.floor(hours / 24) + " d ago";
  }

  function clock(ms) {
    if (!ms) return "";
    const date = new Date(ms - state.skewMs);
    const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
    const today = new Date();
    if (date.toDateString() === today.toDateString()) return time;
    return date.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
  }

  function capitalise(text) {
    return text ? text.charAt(0).toUpperCase() + text.slice(1) : text;
  }

  function colourOf(name) {
    if (!state.colours.has(name)) {
      state.colours.set(name, SERIES_COLOURS[state.colours.size % SERIES_COLOURS.length]);
    }
    return state.colours.get(name);
  }

  // ---------- The API ----------

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return "";
    }
  }

  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage refused (private mode): the token lives as long as the dialog's field.
    }
  }

  function readsNeedToken() {
    try {
      return sessionStorage.getItem(READS_NEED_TOKEN_KEY) === "1";
    } catch (_) {
      return false;
    }
  }

  function markReadsNeedToken() {
    try {
      sessionStorage.setItem(READS_NEED_TOKEN_KEY, "1");
    } catch (_) {
      // Nothing to remember it in; the next 401 asks again.
    }
  }

  // One request. Resolves to {status, body} (body: parsed JSON or null); rejects only when
  // the API did not answer (network error or timeout).
  async function request(method, path, options) {
    const opts = options || {};
    const headers = { Accept: "application/json" };
    const token = opts.token !== undefined ? opts.token : readsNeedToken() ? storedToken() : "";
    if (token) headers.Authorization = "Bearer " + token;
    let body;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    const controller = new AbortController();
    const timeout = setTimeout(() => controller.abort(), opts.timeoutMs || REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(path, {
        method,
        headers,
        body,
        signal: controller.signal,
        cache: "no-store",
        credentials: "same-origin",
        referrerPolicy: "no-referrer",
      });
      noteServerClock(response);
      const text = await response.text();
      let parsed = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch (_) {
        parsed = null;
      }
      return { status: response.status, body: parsed };
    } finally {
      clearTimeout(timeout);
    }
  }

  function noteServerClock(response) {
    const date = Date.parse(response.headers.get("Date") || "");
    if (Number.isNaN(date)) return;
    // The header has whole seconds: keep a smoothed estimate, good to about a second.
    const skew = date + 500 - Date.now();
    state.skewMs = Math.abs(skew - state.skewMs) > 5000 ? skew : state.skewMs * 0.8 + skew * 0.2;
  }

  function errorMessage(result) {
    const error = result && result.body && result.body.error;
    if (error && error.message) return error.message + (error.code ? " (" + error.code + ")" : "");
    return "HTTP " + (result ? result.status : "?");
  }

  // ---------- Polling ----------

  // One poll at a time: a poll asked for while one is under way (after a command, a new
  // token) runs as soon as it ends, and the 2 s cadence resumes from there.
  async function poll() {
    if (state.polling) {
      state.pollAgain = true;
      return;
    }
    state.polling = true;
    clearTimeout(state.timer);
    try {
      await pollOnce();
    } finally {
      state.polling = false;
      state.timer = setTimeout(poll, state.pollAgain ? 0 : POLL_MS);
      state.pollAgain = false;
    }
  }

  async function pollOnce() {
    const reads = [
      request("GET", "/health"),
      request("GET", "/api/database/status"),
      request("GET", "/api/database/alerts?active=true&limit=50"),
      request("GET", "/api/database/failover-history?limit=20"),
      request("GET", "/api/database/metrics?limit=" + metricsLimit()),
    ];
    const [health, status, alerts, history, metrics] = await Promise.allSettled(reads);
    const answered = [health, status, alerts, history].every((r) => r.status === "fulfilled");
    const results = [health, status, alerts, history, metrics]
      .filter((r) => r.status === "fulfilled")
      .map((r) => r.value);

    if (results.some((r) => r.status === 401)) {
      state.unauthorized = true;
      askForReadToken(readsNeedToken() && storedToken() ? "The token was refused: the admin API answered 401." : "");
      markReadsNeedToken();
    } else {
      state.unauthorized = false;
    }

    if (answered && status.value.status === 200) {
      state.lastOk = Date.now();
      state.lastError = null;
      state.status = status.value.body;
      // /health answers 503 with its body when the cluster is unhealthy: still data.
      if (health.value.body && health.value.body.status) state.health = health.value.body;
      if (alerts.value.status === 200 && Array.isArray(alerts.value.body)) state.alerts = alerts.value.body;
      if (history.value.status === 200 && Array.isArray(history.value.body)) state.history = history.value.body;
      beat();
    } else if (!answered) {
      const failed = [health, status, alerts, history].find((r) => r.status === "rejected");
      state.lastError = failed && failed.reason && failed.reason.name === "AbortError" ? "the admin API did not answer within 5 s" : "the admin API cannot be reached";
      state.metricsFull = true;
    } else if (!state.unauthorized) {
      state.lastError = "the admin API answered " + errorMessage(status.value);
    }

    takeMetrics(metrics);
    render();
  }

  function metricsLimit() {
    if (state.metricsFull) return 5000;
    const nodes = Math.max(1, state.samples.size);
    return Math.min(5000, Math.max(60, nodes * 30));
  }

  function takeMetrics(settled) {
    if (settled.status === "rejected") return;
    const result = settled.value;
    if (result.status === 404) {
      state.metrics = "absent";
      return;
    }
    if (result.status === 401) {
      state.metrics = "unauthorized";
      return;
    }
    if (result.status !== 200 || !Array.isArray(result.body)) {
      state.metrics = "error";
      return;
    }
    const limit = metricsLimit();
    const fresh = new Map();
    for (const sample of result.body) {
      if (!sample || typeof sample.node !== "string" || typeof sample.at_ms !== "number") continue;
      if (!fresh.has(sample.node)) fresh.set(sample.node, []);
      fresh.get(sample.node).push({
        t: sample.at_ms,
        ok: sample.ok !== false,
        latency: typeof sample.latency_ms === "number" ? sample.latency_ms : null,
        lagBytes: typeof sample.lag_bytes === "number" ? sample.lag_bytes : null,
        lagSeconds: typeof sample.lag_seconds === "number" ? sample.lag_seconds : null,
      });
    }
    let gap = false;
    for (const [node, incoming] of fresh) {
      incoming.sort((a, b) => a.t - b.t);
      const stored = state.samples.get(node) || [];
      const last = stored.length ? stored[stored.length - 1].t : -Infinity;
      if (stored.length && incoming[0].t > last && result.body.length >= limit) gap = true;
      for (const sample of incoming) if (sample.t > last) stored.push(sample);
      state.samples.set(node, stored);
    }
    const oldest = serverNow() - WINDOW_MS - 10000;
    for (const [node, stored] of state.samples) {
      const keep = stored.findIndex((s) => s.t >= oldest);
      if (keep === -1) state.samples.delete(node);
      else if (keep > 0) stored.splice(0, keep);
    }
    state.metrics = "ok";
    // A partial answer that does not reach what we had: fetch the whole window next time.
    state.metricsFull = gap;
  }

  function beat() {
    const pulse = $("pulse");
    pulse.classList.remove("beat");
    void pulse.offsetWidth; // restart the animation
    pulse.classList.add("beat");
  }

  // ---------- Rendering ----------

  function render() {
    renderConnection();
    renderHeader();
    renderTopology();
    renderAlerts();
    renderHistory();
    renderCharts();
  }

  function renderConnection() {
    // One missed poll is not yet news; an answer older than STALE_MS is.
    const age = state.lastOk ? Date.now() - state.lastOk : Infinity;
    let connection = "connecting";
    if (state.unauthorized) connection = "unauthorized";
    else if (age <= STALE_MS) connection = "ok";
    else if (state.lastError) connection = "disconnected";
    else if (state.lastOk) connection = "stale";
    setData(document.body, "connection", connection);

    const updated = $("last-updated");
    if (state.lastOk) setText(updated, "Updated " + clock(state.lastOk + state.skewMs));
    else if (connection === "unauthorized") setText(updated, "Needs the admin token");
    else if (state.lastError) setText(updated, "No answer yet");
    else setText(updated, "Connecting…");

    const banner = $("banner");
    $("banner-action").hidden = connection !== "unauthorized";
    if (connection === "unauthorized") {
      banner.hidden = false;
      setText($("banner-title"), "Admin token needed.");
      setText($("banner-text"), "This Meridian answers its status only with the admin token.");
    } else if (connection === "disconnected" || connection === "stale") {
      banner.hidden = false;
      setText($("banner-title"), state.lastOk ? "Disconnected — the data below is stale." : "Cannot reach Meridian.");
      const since = state.lastOk ? " Last update " + clock(state.lastOk + state.skewMs) + " (" + ago(state.lastOk + state.skewMs) + ")." : "";
      setText($("banner-text"), capitalise(state.lastError || "no answer from the admin API") + "." + since + " Retrying every 2 s.");
    } else {
      banner.hidden = true;
    }
  }

  function renderHeader() {
    const cluster = $("cluster");
    const health = state.health;
    const status = state.status;
    const clusterState = health ? health.status : "unknown";
    setData(cluster, "clusterState", clusterState);
    setText($("cluster-state"), health ? capitalise(clusterState) : state.lastOk ? "Unknown" : "Connecting");
    if (health && health.version) setText($("version"), "v" + health.version);
    if (!status) return;
    setData(cluster, "primaryNode", status.primary || "");
    setText($("cluster-primary"), status.primary || "none");
    setText($("cluster-generation"), status.generation);
    const nodes = allNodes();
    const up = nodes.filter((n) => n.health === "healthy" || n.health === "degraded").length;
    setText($("cluster-nodes"), up + " / " + nodes.length);
    setData($("cluster-nodes"), "allUp", up === nodes.length ? "true" : "false");
    $("cluster-paused").hidden = !status.paused;
    setData(cluster, "paused", status.paused ? "true" : "false");
  }

  function allNodes() {
    const out = [];
    for (const region of (state.status && state.status.regions) || []) {
      for (const node of region.nodes || []) out.push(Object.assign({ region: region.name }, node));
    }
    return out;
  }

  function renderTopology() {
    const status = state.status;
    const regions = (status && status.regions) || [];
    $("regions-empty").hidden = regions.length > 0;
    const nodes = allNodes();
    for (const node of nodes) colourOf(node.name);
    setText($("topology-note"), regions.length ? regions.length + (regions.length === 1 ? " region · " : " regions · ") + nodes.length + " nodes" : "");
    reconcile($("regions"), regions, (r) => r.name, createRegion, updateRegion);
  }

  function createRegion() {
    const section = el("section", "region");
    const head = el("div", "region-head");
    const name = el("span", "region-name");
    const meta = el("span", "region-meta");
    const tag = el("span", "region-tag", "primary region");
    head.append(name, meta, tag);
    const nodes = el("div", "nodes");
    section.append(head, nodes);
    section.refs = { name, meta, tag, nodes };
    return section;
  }

  function updateRegion(section, region) {
    const refs = section.refs;
    setData(section, "region", region.name);
    setText(refs.name, region.name);
    const nodes = region.nodes || [];
    const up = nodes.filter((n) => n.health === "healthy" || n.health === "degraded").length;
    setText(refs.meta, nodes.length + (nodes.length === 1 ? " node" : " nodes") + " · " + up + " up");
    refs.tag.hidden = !nodes.some((n) => n.primary);
    reconcile(refs.nodes, nodes, (n) => n.name, createNode, (card, node) => updateNode(card, node, region.name));
  }

  function metricRow(list, label) {
    const dt = el("dt", null, label);
    const dd = el("dd");
    list.append(dt, dd);
    return dd;
  }

  function createNode() {
    const card = el("article", "node");
    const head = el("div", "node-head");
    const name = el("span", "node-name");
    const role = el("span", "role");
    head.append(name, role);

    const health = el("div", "health");
    const dot = el("span", "health-dot");
    const healthText = el("span", "health-text");
    const address = el("span", "address");
    const rejoin = el("span", "rejoin", "needs rejoin");
    rejoin.title = "An old primary: it gets no traffic until it is a replica again (meridian rejoin)";
    health.append(dot, healthText, el("span", null, "·"), address, rejoin);

    const list = el("dl", "metrics");
    const lag = metricRow(list, "Replication lag");
    const latency = metricRow(list, "Probe latency");
    const connections = metricRow(list, "Connections");
    const wal = metricRow(list, "Timeline · LSN");
    const meter = el("div", "meter");
    const meterFill = el("div", "meter-fill");
    meter.append(meterFill);

    const error = el("div", "node-error");
    card.append(head, health, list, meter, error);
    card.refs = { name, rejoin, role, healthText, address, lag, latency, connections, wal, meterFill, error };
    return card;
  }

  function updateNode(card, node, region) {
    const r = card.refs;
    setData(card, "node", node.name);
    setData(card, "region", region);
    setData(card, "role", node.role);
    setData(card, "health", node.health);
    setData(card, "primary", node.primary ? "true" : "false");
    setData(card, "needsRejoin", node.needs_rejoin ? "true" : "false");
    setText(r.name, node.name);
    r.name.title = node.name;
    r.rejoin.hidden = !node.needs_rejoin;
    // The role is observed: an old primary that is not the cluster's primary any more still
    // says "primary" until it is rejoined, and must not look like a second one.
    setText(r.role, node.primary ? "primary" : node.role === "primary" ? "old primary" : node.role);
    r.role.title = node.primary ? "the cluster's primary (generation " + (state.status ? state.status.generation : "?") + ")" : "observed role: " + node.role;
    setText(r.healthText, node.health);
    setText(r.address, node.host + ":" + node.port);
    r.address.title = node.upstream ? "streams from " + node.upstream : "";

    if (node.primary || node.role === "primary") {
      setText(r.lag, node.primary ? "— (primary)" : "—");
      r.lag.classList.add("none");
    } else if (node.lag_bytes === null || node.lag_bytes === undefined) {
      setText(r.lag, "unknown");
      r.lag.classList.add("none");
    } else {
      setText(r.lag, humanBytes(node.lag_bytes) + " · " + humanSeconds(node.lag_seconds));
      r.lag.classList.remove("none");
    }
    setText(r.latency, node.latency_ms === null || node.latency_ms === undefined ? "—" : humanMs(node.latency_ms));
    r.latency.classList.toggle("none", node.latency_ms === null || node.latency_ms === undefined);
    const max = Number(node.max_connections) || 0;
    setText(r.connections, max ? node.connections + " / " + max : String(node.connections));
    const share = max ? Math.min(1, node.connections / max) : 0;
    r.meterFill.style.width = (share * 100).toFixed(1) + "%";
    r.meterFill.classList.toggle("high", share >= 0.8);
    r.meterFill.parentElement.title = "Server connections in use: " + node.connections + (max ? " of " + max : "");
    const timeline = node.timeline === null || node.timeline === undefined ? "—" : node.timeline;
    setText(r.wal, timeline + " · " + (node.lsn || "—"));

    if (node.last_error) {
      setText(r.error, node.last_error);
      r.error.title = node.last_error;
      r.error.classList.add("has-error");
    } else {
      const failures = Number(node.consecutive_failures) || 0;
      setText(r.error, failures ? failures + " failed probes in a row" : "No probe errors");
      r.error.title = "";
      r.error.classList.remove("has-error");
    }
  }

  const SEVERITY_RANK = { critical: 4, high: 3, medium: 2, low: 1 };

  function renderAlerts() {
    const alerts = state.alerts
      .filter((a) => a && a.active !== false)
      .slice()
      .sort((a, b) => (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0) || (b.raised_at_ms || 0) - (a.raised_at_ms || 0));
    const count = $("alerts-count");
    setText(count, alerts.length);
    setData(count, "count", alerts.length);
    $("alerts-empty").hidden = alerts.length > 0 || !state.lastOk;
    reconcile($("alerts"), alerts, (a) => a.id, createAlert, updateAlert);
  }

  function createAlert() {
    const item = el("li", "alert");
    const severity = el("span", "severity");
    const title = el("span", "alert-title");
    const kind = el("span", "alert-kind");
    const where = el("span", "alert-where");
    title.append(kind, where);
    const time = el("span", "alert-time");
    const message = el("span", "alert-message");
    item.append(severity, title, time, message);
    item.refs = { severity, kind, where, time, message };
    return item;
  }

  function updateAlert(item, alert) {
    const r = item.refs;
    setData(item, "alertId", alert.id);
    setData(item, "alertKind", alert.kind);
    setData(item, "alertNode", alert.node || "");
    setData(item, "severity", alert.severity);
    setText(r.severity, alert.severity);
    setText(r.kind, alert.kind ? alert.kind.replace(/_/g, " ") : "alert");
    setText(r.where, alert.node ? " · " + alert.node : alert.region ? " · " + alert.region : "");
    r.where.title = [alert.node, alert.region].filter(Boolean).join(" in region ");
    setText(r.time, ago(alert.raised_at_ms));
    r.time.title = "raised " + clock(alert.raised_at_ms) + (alert.updated_at_ms ? ", updated " + clock(alert.updated_at_ms) : "");
    setText(r.message, alert.message || "");
  }

  function renderHistory() {
    const runs = state.history.filter((r) => r && r.id !== undefined);
    $("history-empty").hidden = runs.length > 0 || !state.lastOk;
    reconcile($("history"), runs, (r) => r.id, createRun, updateRun);
  }

  function createRun() {
    const item = el("li", "run");
    const dot = el("span", "run-dot");
    const head = el("div", "run-head");
    const kind = el("span", "run-kind");
    const change = el("span", "run-change");
    const outcome = el("span", "run-outcome");
    head.append(kind, change, outcome);
    const meta = el("div", "run-meta");
    const when = el("span", "run-when");
    const duration = el("span", "run-duration");
    const generation = el("span", "run-generation");
    meta.append(when, duration, generation);
    const reason = el("div", "run-reason");
    const bar = el("div", "phase-bar");
    const phases = el("ol", "phases");
    item.append(dot, head, meta, reason, bar, phases);
    item.refs = { kind, change, outcome, when, duration, generation, reason, bar, phases };
    return item;
  }

  function runEnd(run) {
    if (run.finished_at_ms) return run.finished_at_ms;
    const phases = run.phases || [];
    const last = phases.length ? phases[phases.length - 1].finished_at_ms : 0;
    return Math.max(last || 0, run.outcome === "in_progress" ? serverNow() : 0, run.started_at_ms || 0);
  }

  function outcomeClass(outcome) {
    if (!outcome) return "unknown";
    if (outcome === "completed" || outcome === "in_progress") return outcome;
    if (outcome.startsWith("failed")) return "failed";
    return outcome;
  }

  function updateRun(item, run) {
    const r = item.refs;
    const outcome = outcomeClass(run.outcome);
    setData(item, "runId", run.id);
    setData(item, "runKind", run.kind);
    setData(item, "runOutcome", outcome);
    setData(item, "oldPrimary", run.old_primary || "");
    setData(item, "newPrimary", run.new_primary || "");
    setText(r.kind, run.kind);
    const from = run.old_primary || "?";
    const to = run.new_primary || (outcome === "in_progress" ? "…" : "?");
    setText(r.change, run.kind === "rejoin" ? from + " rejoins as a replica" : from + " → " + to);
    setText(r.outcome, outcome === "in_progress" ? "in progress" : outcome);
    r.outcome.title = run.outcome || "";
    setText(r.when, clock(run.started_at_ms) + " · " + ago(run.started_at_ms));
    const total = runEnd(run) - (run.started_at_ms || 0);
    setText(r.duration, run.duration_ms !== null && run.duration_ms !== undefined ? "took " + humanDuration(run.duration_ms) : "running " + humanDuration(total));
    setText(r.generation, "generation " + run.generation);
    setText(r.reason, run.reason || "");
    r.reason.hidden = !run.reason;

    // Phases: segments placed where they ran within the run, widths proportional to time.
    // The bar spans every phase: detection, for one, began before the run did.
    const phases = (run.phases || []).map((p, i) => Object.assign({ index: i }, p));
    const starts = phases.map((p) => p.started_at_ms).filter((t) => typeof t === "number");
    const ends = phases.map((p) => p.finished_at_ms).filter((t) => typeof t === "number");
    const start = Math.min(run.started_at_ms || Infinity, ...starts);
    const span = Math.max(1, Math.max(runEnd(run), ...ends) - start);
    reconcile(
      r.bar,
      phases,
      (p) => p.index + ":" + p.name,
      () => el("span", "phase-segment"),
      (segment, p) => {
        const left = Math.max(0, Math.min(1, ((p.started_at_ms || start) - start) / span));
        const width = Math.max(0, Math.min(1 - left, (p.duration_ms || 0) / span));
        segment.style.left = (left * 100).toFixed(3) + "%";
        segment.style.width = (width * 100).toFixed(3) + "%";
        segment.style.backgroundColor = phaseColour(p);
        segment.classList.toggle("failed", failedPhase(run, p, phases));
        segment.title = p.name + ": " + humanDuration(p.duration_ms) + " (" + (p.outcome || "?") + ")";
        setData(segment, "phase", p.name);
      },
    );
    r.bar.hidden = phases.length === 0;
    reconcile(
      r.phases,
      phases,
      (p) => p.index + ":" + p.name,
      () => {
        const li = el("li");
        const swatch = el("span", "swatch round");
        const name = el("span", "phase-name");
        const time = el("span", "phase-time");
        li.append(swatch, name, time);
        li.refs = { swatch, name, time };
        return li;
      },
      (li, p) => {
        li.refs.swatch.style.backgroundColor = phaseColour(p);
        setText(li.refs.name, p.name);
        setText(li.refs.time, humanDuration(p.duration_ms));
        li.classList.toggle("failed", failedPhase(run, p, phases));
        li.title = p.name + ": " + (p.outcome || "?");
        setData(li, "phase", p.name);
      },
    );
  }

  // Phase outcomes are free text ("ok", "generation 2", an error...): the one structured
  // fact is the run's outcome, and a failed run stopped at its last phase.
  function phaseColour(phase) {
    if (PHASE_COLOURS[phase.name]) return PHASE_COLOURS[phase.name];
    let hash = 0;
    for (const c of String(phase.name)) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
    return SPARE_PHASE_COLOURS[hash % SPARE_PHASE_COLOURS.length];
  }

  function failedPhase(run, phase, phases) {
    return outcomeClass(run.outcome) === "failed" && phase.index === phases.length - 1;
  }

  // ---------- Charts ----------

  const CHARTS = [
    {
      id: "chart-lag",
      value: (s) => s.lagBytes,
      format: humanBytes,
      units: [
        [1024 * 1024 * 1024, "GiB"],
        [1024 * 1024, "MiB"],
        [1024, "KiB"],
        [1, "B"],
      ],
      floor: 1024,
      showFailures: false,
      none: "No replica reports lag yet",
    },
    {
      id: "chart-latency",
      value: (s) => s.latency,
      format: humanMs,
      units: [
        [1000, "s"],
        [1, "ms"],
      ],
      floor: 1,
      showFailures: true,
      none: "No probe has answered yet",
    },
  ];

  function renderCharts() {
    for (const chart of CHARTS) drawChart(chart);
  }

  function seriesFor(chart, now) {
    const from = now - WINDOW_MS;
    const names = allNodes().map((n) => n.name);
    for (const name of state.samples.keys()) if (!names.includes(name)) names.push(name);
    return names.map((name) => {
      const samples = (state.samples.get(name) || []).filter((s) => s.t >= from - 5000);
      return {
        name,
        colour: colourOf(name),
        samples,
        points: samples.filter((s) => chart.value(s) !== null).map((s) => [s.t, chart.value(s)]),
        failures: samples.filter((s) => !s.ok).map((s) => s.t),
      };
    });
  }

  // A tick step of 1, 2, 2.5 or 5 × 10^k in `unit`s that gives about four intervals.
  function niceScale(max, units, floor) {
    const top = Math.max(max, floor);
    const [unit, label] = units.find(([size]) => top >= size) || units[units.length - 1];
    const scaled = top / unit;
    const rough = scaled / 4;
    const power = Math.pow(10, Math.floor(Math.log10(rough)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough) || 10 * power;
    const ceiling = Math.ceil(scaled / step - 1e-9) * step;
    const ticks = [];
    for (let v = 0; v <= ceiling + step / 2; v += step) ticks.push(v);
    const digits = step < 1 ? (String(step).split(".")[1] || "").length : 0;
    return { max: ceiling * unit, ticks: ticks.map((v) => [v * unit, Number(v.toFixed(digits)) + " " + label]) };
  }

  function drawChart(chart) {
    const figure = $(chart.id);
    const plot = figure.querySelector(".chart-plot");
    const empty = figure.querySelector(".chart-empty");
    const legend = figure.querySelector(".legend");
    const now = serverNow();
    const series = state.metrics === "ok" ? seriesFor(chart, now) : [];
    const withPoints = series.filter((s) => s.points.length > 0);

    let chartState = "ok";
    if (state.metrics === "absent") {
      chartState = "absent";
      setText(empty, "No data: this Meridian does not serve probe metrics (/api/database/metrics).");
    } else if (state.metrics === "unauthorized") {
      chartState = "error";
      setText(empty, "No data: the metrics need the admin token.");
    } else if (state.metrics === "error") {
      chartState = "error";
      setText(empty, "No data: the metrics could not be read.");
    } else if (state.metrics === "loading") {
      chartState = "loading";
      setText(empty, "Loading…");
    } else if (withPoints.length === 0) {
      chartState = "empty";
      setText(empty, "No data in the last 5 minutes. " + chart.none + ".");
    }
    setData(figure, "chartState", chartState);

    const width = Math.max(200, Math.round(plot.clientWidth || 400));
    const height = Math.max(100, Math.round(plot.clientHeight || 180));
    const margin = { left: 58, right: 10, top: 8, bottom: 20 };
    const innerW = width - margin.left - margin.right;
    const innerH = height - margin.top - margin.bottom;
    let max = 0;
    for (const s of withPoints) for (const [t, v] of s.points) if (t >= now - WINDOW_MS && v > max) max = v;
    const scale = niceScale(max, chart.units, chart.floor);
    const x = (t) => margin.left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * innerW;
    const y = (v) => margin.top + innerH - (Math.min(v, scale.max) / scale.max) * innerH;

    const root = svg("svg", { viewBox: "0 0 " + width + " " + height, width, height, role: "img" });
    root.setAttribute("aria-label", figure.querySelector("h2").textContent);
    const defs = svg("defs");
    const clip = svg("clipPath", { id: chart.id + "-clip" });
    clip.append(svg("rect", { x: margin.left, y: margin.top - 2, width: innerW, height: innerH + 4 }));
    defs.append(clip);
    root.append(defs);

    for (const [value, label] of chartState === "ok" ? scale.ticks : [[0, ""]]) {
      const ty = y(value);
      root.append(svg("line", { class: value === 0 ? "axis" : "grid", x1: margin.left, x2: width - margin.right, y1: ty, y2: ty }));
      const text = svg("text", { x: margin.left - 8, y: ty + 3.5, "text-anchor": "end" });
      text.textContent = label;
      root.append(text);
    }
    for (let minute = 5; minute >= 0; minute -= 1) {
      const tx = x(now - minute * 60000);
      const text = svg("text", { x: tx, y: height - 5, "text-anchor": minute === 5 ? "start" : minute === 0 ? "end" : "middle" });
      text.textContent = minute === 0 ? "now" : "−" + minute + " min";
      root.append(text);
    }

    const lines = svg("g", { "clip-path": "url(#" + chart.id + "-clip)" });
    for (const s of withPoints) {
      const gapMs = gapThreshold(s.points);
      let d = "";
      let previous = null;
      for (const [t, v] of s.points) {
        const command = previous === null || t - previous > gapMs ? "M" : "L";
        d += command + x(t).toFixed(1) + " " + y(v).toFixed(1) + " ";
        previous = t;
      }
      const path = svg("path", { class: "series", d: d.trim(), stroke: s.colour });
      path.dataset.series = s.name;
      lines.append(path);
      // A lone point would be invisible as a path: mark the newest one.
      const [lt, lv] = s.points[s.points.length - 1];
      lines.append(svg("circle", { cx: x(lt).toFixed(1), cy: y(lv).toFixed(1), r: 2.6, fill: s.colour }));
    }
    if (chart.showFailures) {
      for (const s of series) {
        for (const t of s.failures) {
          const fx = x(t).toFixed(1);
          lines.append(svg("line", { class: "failure", x1: fx, x2: fx, y1: margin.top + innerH - 7, y2: margin.top + innerH }));
        }
      }
    }
    root.append(lines);
    const cursor = svg("line", { class: "cursor", x1: 0, x2: 0, y1: margin.top, y2: margin.top + innerH, visibility: "hidden" });
    root.append(cursor);
    plot.replaceChildren(root);
    figure.geometry = { series: withPoints, x, margin, innerW, now, chart, cursor, width };
    // Under a resting pointer the tooltip follows the new data instead of going stale.
    if (figure.pointer) hoverChart(figure, figure.pointer);

    const failing = chart.showFailures && series.some((s) => s.failures.some((t) => t >= now - WINDOW_MS));
    const legendItems = chartState === "ok" ? series.filter((s) => s.points.length > 0 || (chart.showFailures && s.samples.length > 0)) : [];
    if (failing) legendItems.push({ name: "failed probe", colour: "var(--down)", samples: [], failureKey: true });
    reconcile(
      legend,
      legendItems,
      (s) => s.name,
      () => {
        const li = el("li");
        const swatch = el("span", "swatch");
        const name = el("span", "legend-name");
        const value = el("span", "legend-value");
        li.append(swatch, name, value);
        li.refs = { swatch, name, value };
        return li;
      },
      (li, s) => {
        li.refs.swatch.style.backgroundColor = s.colour;
        li.refs.swatch.classList.toggle("tick", Boolean(s.failureKey));
        setText(li.refs.name, s.name);
        const last = s.samples.length ? s.samples[s.samples.length - 1] : null;
        const value = last ? chart.value(last) : null;
        if (s.failureKey) setText(li.refs.value, "");
        else setText(li.refs.value, last && !last.ok && chart.showFailures ? "failing" : value === null ? "—" : chart.format(value));
        setData(li, "series", s.name);
      },
    );
  }

  function gapThreshold(points) {
    if (points.length < 3) return 10000;
    const gaps = [];
    for (let i = 1; i < points.length; i += 1) gaps.push(points[i][0] - points[i - 1][0]);
    gaps.sort((a, b) => a - b);
    return Math.max(5000, 3 * gaps[Math.floor(gaps.length / 2)]);
  }

  function hoverChart(figure, event) {
    const g = figure.geometry;
    const tip = figure.querySelector(".chart-tip");
    if (!g || g.series.length === 0) {
      tip.hidden = true;
      return;
    }
    const box = figure.querySelector(".chart-plot").getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * g.width;
    if (px < g.margin.left || px > g.margin.left + g.innerW) {
      leaveChart(figure);
      return;
    }
    const t = g.now - WINDOW_MS + ((px - g.margin.left) / g.innerW) * WINDOW_MS;
    const rows = [];
    for (const s of g.series) {
      let best = null;
      for (const point of s.points) if (!best || Math.abs(point[0] - t) < Math.abs(best[0] - t)) best = point;
      if (best && Math.abs(best[0] - t) < 5000) rows.push([s, best[1]]);
    }
    g.cursor.setAttribute("x1", px.toFixed(1));
    g.cursor.setAttribute("x2", px.toFixed(1));
    g.cursor.setAttribute("visibility", "visible");
    const children = [el("div", "tip-time", clock(t))];
    for (const [s, value] of rows) {
      const row = el("div", "tip-row");
      const swatch = el("span", "swatch");
      swatch.style.backgroundColor = s.colour;
      row.append(swatch, el("span", null, s.name), el("span", "tip-value", g.chart.format(value)));
      children.push(row);
    }
    tip.replaceChildren(...children);
    tip.hidden = false;
    const left = event.clientX - box.left;
    const tipWidth = tip.offsetWidth;
    tip.style.left = (left + 14 + tipWidth > box.width ? left - 14 - tipWidth : left + 14) + "px";
  }

  function leaveChart(figure) {
    figure.querySelector(".chart-tip").hidden = true;
    if (figure.geometry) figure.geometry.cursor.setAttribute("visibility", "hidden");
  }

  // ---------- Dialogs: the read token and the operator commands ----------

  function askForReadToken(error) {
    const dialog = $("token-dialog");
    if (dialog.open || $("command-dialog").open || state.tokenDismissed) return;
    const message = $("token-error");
    message.hidden = !error;
    setText(message, error || "");
    $("token-input").value = storedToken();
    dialog.showModal();
  }

  function setupTokenDialog() {
    $("banner-action").addEventListener("click", () => {
      state.tokenDismissed = false;
      askForReadToken("");
    });
    $("token-dialog").addEventListener("cancel", () => {
      state.tokenDismissed = true;
    });
    $("token-form").addEventListener("submit", () => {
      const token = $("token-input").value.trim();
      if (token) {
        storeToken(token);
        markReadsNeedToken();
        state.unauthorized = false;
        state.metricsFull = true;
        poll();
      }
    });
  }

  const command = { kind: null, target: null, token: "" };

  function openCommand(kind) {
    const dialog = $("command-dialog");
    if (dialog.open) return;
    if ($("token-dialog").open) $("token-dialog").close();
    command.kind = kind;
    setData(dialog, "command", kind);
    setData(dialog, "step", "form");
    const select = $("command-target");
    select.replaceChildren();
    const nodes = allNodes();
    const primary = state.status && state.status.primary;
    if (kind === "switchover") {
      setText($("command-title"), "Switchover");
      setText(
        $("command-explain"),
        "Planned change of primary: Meridian holds new writes, waits until the chosen replica has " +
          "replayed everything the primary wrote, then promotes it and turns the old primary into " +
          "a replica. No acknowledged write is lost.",
      );
      setText($("command-target-label"), "New primary");
      const best = el("option", null, "The best replica (Meridian chooses)");
      best.value = "";
      select.append(best);
      for (const node of nodes.filter((n) => n.name !== primary)) {
        const lag = node.lag_bytes !== null && node.lag_bytes !== undefined ? ", lag " + humanBytes(node.lag_bytes) : "";
        const option = el("option", null, node.name + " — " + node.region + ", " + node.health + lag);
        option.value = node.name;
        option.disabled = node.health === "down";
        select.append(option);
      }
      setText($("command-run"), "Switch over");
    } else {
      setText($("command-title"), "Failover to a region");
      setText(
        $("command-explain"),
        "Promotes the best replica of the chosen region. The current primary is fenced first " +
          "when it can be reached. With asynchronous replication, writes it had not yet sent may be lost.",
      );
      setText($("command-target-label"), "Region");
      const regions = (state.status && state.status.regions) || [];
      for (const region of regions) {
        const nodes = region.nodes || [];
        const up = nodes.filter((n) => n.health === "healthy" || n.health === "degraded").length;
        const option = el("option", null, region.name + " — " + up + " of " + nodes.length + " nodes up");
        option.value = region.name;
        select.append(option);
      }
      // Failing over within the primary's own region is the rarer wish: offer another first.
      const elsewhere = regions.find((r) => !(r.nodes || []).some((n) => n.primary));
      if (elsewhere) select.value = elsewhere.name;
      setText($("command-run"), "Fail over");
    }
    $("command-target-field").hidden = select.options.length === 0;
    $("command-token").value = storedToken();
    $("command-form-error").hidden = true;
    dialog.showModal();
    (select.options.length ? select : $("command-token")).focus();
  }

  function commandStep(step) {
    setData($("command-dialog"), "step", step);
  }

  function setupCommandDialog() {
    $("switchover-open").addEventListener("click", () => openCommand("switchover"));
    $("failover-open").addEventListener("click", () => openCommand("failover"));
    $("command-cancel").addEventListener("click", () => $("command-dialog").close());
    $("command-back").addEventListener("click", () => commandStep("form"));
    $("command-again").addEventListener("click", () => commandStep("form"));
    $("command-dialog").addEventListener("cancel", (event) => {
      if ($("command-dialog").dataset.step === "running") event.preventDefault();
    });
    $("command-next").addEventListener("click", () => {
      const token = $("command-token").value.trim();
      const target = $("command-target").value;
      const error = $("command-form-error");
      if (!token) {
        error.hidden = false;
        setText(error, "The admin token is needed for commands.");
        return;
      }
      if (command.kind === "failover" && !target) {
        error.hidden = false;
        setText(error, "Choose a region.");
        return;
      }
      error.hidden = true;
      command.token = token;
      command.target = target;
      const text = $("command-confirm-text");
      const primary = (state.status && state.status.primary) || "the current primary";
      text.replaceChildren();
      if (command.kind === "switchover") {
        text.append("Switch the primary from ", el("strong", null, primary), " to ", el("strong", null, target || "the best replica"), "?");
      } else {
        text.append("Fail over from ", el("strong", null, primary), " to the best replica of region ", el("strong", null, target), "?");
      }
      commandStep("confirm");
      $("command-run").focus();
    });
    $("command-run").addEventListener("click", runCommand);
    // Enter in a field submits the form: it means "Continue", never "close" or "run".
    $("command-form").addEventListener("submit", (event) => {
      const step = $("command-dialog").dataset.step;
      if (step === "result") return;
      event.preventDefault();
      if (step === "form") $("command-next").click();
    });
  }

  async function runCommand() {
    const isSwitchover = command.kind === "switchover";
    const path = isSwitchover ? "/api/database/switchover" : "/api/database/failover/" + encodeURIComponent(command.target);
    const json = isSwitchover && command.target ? { to: command.target } : undefined;
    setText($("command-running-text"), (isSwitchover ? "Switching over" : "Failing over") + "… (this can take several seconds)");
    commandStep("running");
    const result = $("command-result");
    let answer;
    try {
      answer = await request("POST", path, { token: command.token, json, timeoutMs: 150000 });
    } catch (error) {
      answer = null;
      setData(result, "result", "error");
      const why = error && error.name === "AbortError" ? "timed out" : "network error";
      setText(result, "No answer from Meridian (" + why + "). The failover history will show the outcome.");
    }
    if (answer) {
      if (answer.status >= 200 && answer.status < 300) {
        // Accepted by Meridian: remember the token for the next command.
        storeToken(command.token);
        const run = answer.body || {};
        const outcome = outcomeClass(run.outcome);
        setData(result, "result", outcome === "completed" || outcome === "done" ? "ok" : outcome === "in_progress" ? "pending" : "error");
        if (run.kind) {
          const change = (run.old_primary || "?") + " → " + (run.new_primary || "?");
          const took = run.duration_ms !== null && run.duration_ms !== undefined ? " in " + humanDuration(run.duration_ms) : "";
          const status = outcome === "in_progress" ? "is still running; the failover history shows how it ends" : run.outcome + took;
          setText(result, capitalise(run.kind) + " " + change + " " + status + " (generation " + run.generation + ").");
        } else {
          setText(result, "Done: " + (run.outcome || "accepted") + ".");
        }
      } else {
        setData(result, "result", "error");
        setText(result, "Refused — " + errorMessage(answer) + ", HTTP " + answer.status + ".");
      }
    }
    // After a run, "Back" would invite running it again: only offer it after a refusal.
    $("command-again").hidden = result.dataset.result !== "error";
    commandStep("result");
    poll();
  }

  // ---------- Start ----------

  function start() {
    setupTokenDialog();
    setupCommandDialog();
    for (const chart of CHARTS) {
      const figure = $(chart.id);
      const body = figure.querySelector(".chart-body");
      body.addEventListener("mousemove", (event) => {
        figure.pointer = { clientX: event.clientX };
        hoverChart(figure, figure.pointer);
      });
      body.addEventListener("mouseleave", () => {
        figure.pointer = null;
        leaveChart(figure);
      });
    }
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(renderCharts, 100);
    });
    // Relative times and the stale banner move on between polls too.
    setInterval(() => {
      renderConnection();
      renderAlerts();
      renderHistory();
    }, 1000);
    render();
    poll();
  }

  start();
})();
