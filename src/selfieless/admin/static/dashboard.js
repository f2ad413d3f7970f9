// selfieless dashboard: polls /api/status every second, follows /api/events with a long poll.
// No framework, no external resources. Stable data-testid attributes for tests:
//   service-<name>, desired-<name>, actual-<name>, scale-up-<name>, scale-down-<name>,
//   rps-<name>, chart-<name>, replicas-<name>, replica-<id> (data-state, data-port, data-health),
//   more-<name> (the replicas not drawn, data-count), events (li data-kind), token-form, error.
"use strict";

const POLL_MS = 1000;
const HISTORY = 300;        // chart points, one a second: the last five minutes
const GHOST_MS = 15000;     // how long a failed replica stays on screen after it is gone
// Cards drawn per service: the status lists those that need a look first and counts the rest
// (GET /api/status?list=N), as a thousand cards redrawn every second would not help anyone.
const LISTED = 48;

const state = {
  token: sessionStorage.getItem("selfieless-token") || "",
  services: {},            // name -> {el, history: [{t, n}], series: [rps]}
  ghosts: {},              // replica id -> {service, port, state, reason, until}
  ports: {},               // replica id -> port, as last seen in a status
  cursor: null,
  needToken: false,
  historyLoaded: false,
};

const $ = (sel, root = document) => root.querySelector(sel);

function headers(extra = {}) {
  const h = { ...extra };
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  return h;
}

async function api(path, opts = {}) {
  const resp = await fetch(path, { ...opts, headers: headers(opts.headers || {}) });
  if (resp.status === 401) {
    askToken();
    throw new Error("unauthorized");
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) throw new Error((body && body.error) || ("HTTP " + resp.status));
  return body;
}

function askToken() {
  state.needToken = true;
  const form = $("#token-form");
  if (form.hidden) {
    form.hidden = false;
    $("#token-input").focus();
  }
}

$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("#token-input").value.trim();
  sessionStorage.setItem("selfieless-token", state.token);
  state.needToken = false;
  $("#token-form").hidden = true;
  state.cursor = null;
  pollStatus();
});

function showError(msg) {
  const el = $("#error");
  if (msg) { el.textContent = msg; el.hidden = false; } else { el.hidden = true; el.textContent = ""; }
}

// ---------------------------------------------------------------------------------------------
// Services

function serviceView(name) {
  let sv = state.services[name];
  if (sv) return sv;
  const node = $("#service-template").content.firstElementChild.cloneNode(true);
  node.id = "service-" + name;
  node.dataset.testid = "service-" + name;
  $(".service-name", node).textContent = name;
  $(".desired", node).dataset.testid = "desired-" + name;
  $(".actual", node).dataset.testid = "actual-" + name;
  $(".rps", node).dataset.testid = "rps-" + name;
  $(".chart", node).dataset.testid = "chart-" + name;
  $(".replicas", node).dataset.testid = "replicas-" + name;
  const up = $(".scale-up", node), down = $(".scale-down", node);
  up.dataset.testid = "scale-up-" + name;
  down.dataset.testid = "scale-down-" + name;
  up.addEventListener("click", () => scaleBy(name, +1));
  down.addEventListener("click", () => scaleBy(name, -1));
  $("#services").appendChild(node);
  sv = state.services[name] = { el: node, history: [], series: [], desired: 0, min: 0, max: 0 };
  return sv;
}

async function scaleBy(name, delta) {
  const sv = state.services[name];
  const target = sv.desired + delta;
  if (target < sv.min || target > sv.max) return;
  try {
    const r = await api("/api/scale", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ service: name, replicas: target }),
    });
    sv.desired = r.desired;
    $(".desired", sv.el).textContent = r.desired;
    showError("");
  } catch (e) {
    showError("scale " + name + ": " + e.message);
  }
}

function health(rep) {
  if (rep.state === "ready") return rep.in_pool === false ? "red" : "green";
  if (rep.state === "unhealthy" || rep.state === "exited") return "red";
  return "grey"; // starting, stopping (draining), pending
}

function replicaCard(r) {
  const li = document.createElement("li");
  const colour = health(r);
  li.className = "replica health-" + colour + (r.ghost ? " ghost" : "");
  li.dataset.testid = "replica-" + r.id;
  li.dataset.state = r.state;
  li.dataset.port = r.port;
  li.dataset.health = colour;
  const label = r.ghost ? r.state + " (replaced)" : (r.state === "ready" && r.in_pool === false ? "ejected" : r.state);
  const line = (cls, text) => { const d = document.createElement("div"); d.className = cls; d.textContent = text; return d; };
  li.appendChild(line("port", ":" + r.port));
  li.appendChild(line("rid", r.id));
  li.appendChild(line("st", label));
  if (!r.ghost && r.state !== "pending") {
    li.appendChild(line("nums", `${r.requests} req · ${r.in_flight} in flight`));
    if (r.restarts) li.appendChild(line("nums", `${r.restarts} restart${r.restarts === 1 ? "" : "s"}`));
  }
  li.title = r.last_error || r.reason || "";
  return li;
}

function moreCard(name, counts) {
  const li = document.createElement("li");
  const n = counts.reduce((sum, [, k]) => sum + k, 0);
  li.className = "replica more";
  li.dataset.testid = "more-" + name;
  li.dataset.count = n;
  li.textContent = `+ ${n} more: ` + counts.map(([st, k]) => `${k} ${st}`).join(", ");
  return li;
}

function policyText(svc) {
  const w = svc.window;
  if (svc.policy === "window" && w) return `window of ${w.seconds} s, ${w.requests_per_replica} req per replica`;
  if (svc.policy === "none") return "none (scaled by hand)";
  return svc.policy;
}

// The admin API keeps the last minutes of requests/s; a fresh page starts its charts from them.
async function loadHistory() {
  const h = await api(`/api/history?seconds=${HISTORY}`);
  for (const [name, points] of Object.entries(h.services)) {
    const sv = state.services[name];
    if (!sv) continue;
    sv.series = points.map((p) => p[1]).slice(-HISTORY);
    if (sv.series.length) $(".rps", sv.el).textContent = sv.series[sv.series.length - 1].toFixed(1);
    drawChart($(".chart", sv.el), sv.series);
  }
  state.historyLoaded = true;
}

function renderService(name, svc, now) {
  const sv = serviceView(name);
  sv.desired = svc.desired;
  sv.min = svc.min;
  sv.max = svc.max;
  $(".desired", sv.el).textContent = svc.desired;
  $(".actual", sv.el).textContent = svc.actual;
  $(".scale-down", sv.el).disabled = svc.desired <= svc.min;
  $(".scale-up", sv.el).disabled = svc.desired >= svc.max;
  $(".policy", sv.el).textContent = `autoscale: ${policyText(svc)} · ports ${svc.host_ports} · ${svc.ready} ready`;
  const w = svc.window;
  $(".window", sv.el).textContent = w ? (w.started ? `· window ${w.count} req, ends in ${Math.round(w.ends_in)} s`
                                                   : "· window starts at the first request") : "";
  $(".decision", sv.el).textContent = svc.last_decision || "";

  // Requests per second from successive polls of api_requests.
  sv.history.push({ t: now, n: svc.api_requests });
  if (sv.history.length > 2) sv.history.shift();
  if (sv.history.length === 2) {
    const [a, b] = sv.history;
    const dt = (b.t - a.t) / 1000;
    const rps = dt > 0 ? Math.max(0, (b.n - a.n) / dt) : 0;
    sv.series.push(rps);
    if (sv.series.length > HISTORY) sv.series.shift();
    $(".rps", sv.el).textContent = rps.toFixed(1);
  }
  drawChart($(".chart", sv.el), sv.series);

  for (const r of svc.replicas) state.ports[r.id] = r.port;
  const seen = new Set(svc.replicas.map((r) => r.id));
  const cards = svc.replicas.slice();
  for (const [id, g] of Object.entries(state.ghosts)) {
    if (g.service === name && !seen.has(id) && g.until > now) cards.push({ id, ...g, ghost: true });
  }
  for (const p of svc.pending || []) {
    if (!cards.some((c) => c.port === p.port && !c.ghost)) {
      cards.push({ id: `${name}-${p.port}-pending`, port: p.port, state: "pending", reason: p.reason });
    }
  }
  cards.sort((a, b) => a.port - b.port || (a.ghost ? -1 : 0) - (b.ghost ? -1 : 0));
  const ul = $(".replicas", sv.el);
  const items = cards.map(replicaCard);
  const more = Object.entries(svc.not_listed || {});
  if (more.length) items.push(moreCard(name, more));
  ul.replaceChildren(...items);
}

function drawChart(canvas, series) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 360, h = canvas.clientHeight || 90;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  canvas.dataset.points = series.length;  // for tests: how much history the chart holds
  canvas.dataset.peak = series.length ? Math.max(...series).toFixed(1) : "0";
  const peak = Math.max(1, ...series);
  const top = niceCeil(peak);
  ctx.strokeStyle = "#e3e6eb";
  ctx.lineWidth = 1;
  ctx.fillStyle = "#6b7280";
  ctx.font = "10px system-ui, sans-serif";
  for (const f of [0.5, 1]) {
    const y = h - 4 - (h - 14) * f;
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(String(+(top * f).toFixed(1)), 3, y - 2);
  }
  if (series.length < 2) return;
  const step = w / (HISTORY - 1);
  const x0 = w - step * (series.length - 1);
  ctx.beginPath();
  series.forEach((v, i) => {
    const x = x0 + i * step, y = h - 4 - (h - 14) * (v / top);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.strokeStyle = "#2f6fde";
  ctx.lineWidth = 2;
  ctx.stroke();
  ctx.lineTo(x0 + (series.length - 1) * step, h - 4);
  ctx.lineTo(x0, h - 4);
  ctx.closePath();
  ctx.fillStyle = "rgba(47, 111, 222, 0.12)";
  ctx.fill();
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

async function pollStatus() {
  if (state.needToken) return;
  try {
    const st = await api(`/api/status?list=${LISTED}`);
    const now = Date.now();
    $("#stack-name").textContent = st.stack;
    document.title = `stack ${st.stack} · selfieless dashboard`;
    $("#driver").textContent = "driver: " + st.driver;
    const conv = $("#converged");
    conv.textContent = st.converged ? "converged" : "converging";
    conv.className = "badge" + (st.converged ? " ok" : "");
    for (const [name, svc] of Object.entries(st.services)) renderService(name, svc, now);
    if (!state.historyLoaded) await loadHistory();
    $("#updated").textContent = "updated " + new Date(now).toLocaleTimeString();
    showError("");
    if (state.cursor === null) followEvents(st.last_event_id);
  } catch (e) {
    if (e.message !== "unauthorized") showError("cannot reach the admin API: " + e.message);
  }
}

// ---------------------------------------------------------------------------------------------
// Events

const FAILED = { exited: "exited", unhealthy: "unhealthy", ejected: "unhealthy" };

function addEvent(ev) {
  const li = document.createElement("li");
  li.dataset.kind = ev.kind;
  li.dataset.id = ev.id;
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = new Date(ev.ts * 1000).toLocaleTimeString();
  const kind = document.createElement("span");
  kind.className = "kind kind-" + ev.kind;
  kind.textContent = ev.kind;
  const text = document.createElement("span");
  text.textContent = " " + [ev.service, ev.replica].filter(Boolean).join("/") + ": " + ev.reason;
  li.append(when, kind, text);
  const list = $("#events");
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();

  if (ev.replica && FAILED[ev.kind]) {
    const m = /-(\d+)(?:-|$)/.exec(ev.replica);
    const known = Object.values(state.services).length && state.services[ev.service];
    state.ghosts[ev.replica] = {
      service: ev.service, port: state.ports[ev.replica] || (m ? Number(m[1]) : 0), state: FAILED[ev.kind], reason: ev.reason,
      until: Date.now() + GHOST_MS,
    };
    if (known) pollStatus();
  }
}

async function followEvents(lastId) {
  state.cursor = Math.max(0, lastId - 50);
  let first = true;
  while (!state.needToken) {
    try {
      const r = await api(`/api/events?after=${state.cursor}&wait=${first ? 0 : 25}`);
      // Backlog shown without turning old failures into fresh red cards.
      for (const ev of r.events) {
        if (first && FAILED[ev.kind] && Date.now() / 1000 - ev.ts > GHOST_MS / 1000) {
          addEvent({ ...ev, replica: null, reason: `${ev.replica || ""} ${ev.reason}`.trim() });
        } else addEvent(ev);
      }
      state.cursor = r.next;
      first = false;
    } catch (e) {
      if (e.message === "unauthorized") { state.cursor = null; return; }
      await new Promise((res) => setTimeout(res, 2000));
    }
  }
  state.cursor = null;
}

pollStatus();
setInterval(pollStatus, POLL_MS);
