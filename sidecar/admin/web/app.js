// sluice status page: polls the admin API once a second (v1/status,
// v1/history, v1/jobs and the selected job) and draws what it reads. The
// charts are plain SVG drawn below, so the page needs no library and no
// network beyond the sidecar. Every value is put in with textContent,
// never parsed as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "sluice.adminToken";
  const WINDOW_MS = 15 * 60 * 1000;
  const POLL_MS = 1000;
  const SVGNS = "http://www.w3.org/2000/svg";
  // States a job writes in; an action the store cannot reverse (reopen)
  // is offered only outside them, so a state added later stays actionable.
  const LIVE = new Set(["pending", "running", "idle", "throttled", "backoff", "stalled", "cancelling", "cleaning"]);
  const TERMINAL = new Set(["completed", "cancelled", "failed"]);

  const $ = (id) => document.getElementById(id);
  const page = {
    points: [], lastT: 0, status: null, caps: null,
    selected: null, job: null, confirming: null, hidden: new Set(),
    offset: 0, // the sidecar's clock minus the browser's, in ms
  };

  // serverNow is the sidecar's time now. Ages and the chart's time axis
  // count from it, not from the browser's clock, which may be minutes off
  // the sidecar's (a laptop behind kubectl port-forward): ahead, every age
  // would grow by the difference and the chart would show nothing.
  function serverNow() { return Date.now() + page.offset; }

  // ---- formatting -------------------------------------------------------

  function num(v) {
    if (v === undefined || v === null || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (a >= 100 || Number.isInteger(v)) return Math.round(v).toString();
    return v.toFixed(1);
  }
  function bytes(v) {
    if (!(v > 0)) return "0 B";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : v.toString()) + " " + units[i];
  }
  function ago(iso) {
    if (!iso) return "–";
    const ms = serverNow() - Date.parse(iso);
    if (Number.isNaN(ms)) return "–";
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 90) return s + "s ago";
    if (s < 90 * 60) return Math.round(s / 60) + "m ago";
    if (s < 48 * 3600) return Math.round(s / 3600) + "h ago";
    return Math.round(s / 86400) + "d ago";
  }
  function clock(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? "–" : d.toLocaleTimeString();
  }
  function perSecond(v, unit) {
    return unit === "bytes" ? bytes(v) + "/s" : num(v) + " writes/s";
  }
  function cause(j) {
    if (j.stall_cause) return j.stall_cause;
    if (j.reason && j.state !== "running" && j.state !== "pending") return j.reason;
    return "";
  }
  function setText(id, text) { $(id).textContent = text; }
  function node(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) tr.appendChild(c instanceof Node ? wrapTd(c) : node("td", c));
    return tr;
  }
  function wrapTd(child) {
    const td = document.createElement("td");
    td.appendChild(child);
    return td;
  }
  // fill makes el's children the given nodes, keeping every node that is
  // already as it should be. The page refreshes once a second: were its
  // tables rebuilt each time, a job id being selected to copy would be
  // unselected, and a click whose button went down before a refresh and
  // up after it would land on nothing.
  function fill(el, nodes) {
    const fresh = el.cloneNode(false);
    for (const n of nodes) fresh.appendChild(n);
    update(el, fresh);
  }
  function update(el, fresh) {
    const kids = [...fresh.childNodes];
    kids.forEach((n, i) => {
      const old = el.childNodes[i];
      if (!old) {
        el.appendChild(n);
      } else if (old.isEqualNode(n)) {
        // unchanged: kept, with any selection in it
      } else if (old.nodeType === Node.TEXT_NODE && n.nodeType === Node.TEXT_NODE) {
        old.data = n.data;
      } else if (old.nodeType === Node.ELEMENT_NODE && old.tagName === n.tagName) {
        for (const a of [...old.attributes]) if (!n.hasAttribute(a.name)) old.removeAttribute(a.name);
        for (const a of [...n.attributes]) if (old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value);
        update(old, n);
      } else {
        el.replaceChild(n, old);
      }
    });
    while (el.childNodes.length > kids.length) el.removeChild(el.lastChild);
  }
  function stateBadge(state, why) {
    const span = node("span", state, "state " + state);
    if (!why) return span;
    const f = document.createDocumentFragment();
    f.appendChild(span);
    f.appendChild(document.createTextNode(" " + why));
    return f;
  }

  // ---- the admin API ----------------------------------------------------

  // A read the sidecar has not answered within REQUEST_TIMEOUT_MS is given
  // up. A fetch has no deadline of its own: one left hanging (a
  // port-forward to a pod that went away, a sidecar that stopped
  // answering) would hold the refresh forever, the page showing old
  // numbers as current and never saying that it cannot read the API.
  const REQUEST_TIMEOUT_MS = 5000;

  async function getJSON(path) {
    try {
      const r = await fetch(path, {
        cache: "no-store", headers: { Accept: "application/json" }, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      if (!r.ok) {
        const e = new Error(path + " answered " + r.status);
        e.status = r.status;
        throw e;
      }
      return await r.json();
    } catch (e) {
      if (e.name === "TimeoutError") throw new Error(`${path} did not answer within ${REQUEST_TIMEOUT_MS / 1000}s`);
      throw e;
    }
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  // ---- the token --------------------------------------------------------

  function renderToken() {
    const note = $("token-note");
    const caps = page.caps || {};
    $("token").placeholder = token() ? "(token set for this tab)" : "SLUICE_ADMIN_TOKEN";
    $("token-forget").disabled = !token();
    note.className = "note";
    if (token()) {
      note.textContent = "Admin token set: actions send it as Authorization: Bearer. It is kept for this tab only (sessionStorage).";
    } else if (caps.token_required) {
      note.textContent = "No admin token given: the page is read-only. Cancel, complete and reopen need SLUICE_ADMIN_TOKEN; enter it above.";
    } else if (caps.loopback) {
      note.textContent = "No admin token given. This sluice has no SLUICE_ADMIN_TOKEN and you reach it over loopback, so it accepts actions without one.";
    } else {
      note.textContent = "No admin token given. This sluice has no SLUICE_ADMIN_TOKEN, so it accepts actions from loopback callers only: yours will be refused.";
    }
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("token").value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v);
    $("token").value = "";
    renderToken();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    renderToken();
  });

  // ---- the controller ---------------------------------------------------

  function renderStatus(s) {
    const l = s.limiter;
    const ready = $("readiness");
    ready.textContent = s.readiness;
    ready.className = "pill " + s.readiness;
    setText("identity", `${s.version} · ${s.profile} · ${s.upstream}`);
    const phase = $("phase");
    phase.textContent = l.phase + (l.paused_until && Date.parse(l.paused_until) > serverNow() ? " until " + clock(l.paused_until) : "");
    phase.className = "phase " + l.phase;
    setText("rate-limit", perSecond(l.rate_limit, s.rate_unit));
    setText("concurrency", num(l.concurrency_limit));
    setText("in-flight", num(l.in_flight) + (l.pipelined ? ` (+${l.pipelined} pipelined)` : ""));
    setText("queue", num(l.queue_length) + " waiting");
    setText("last-throttle", l.last_throttle ? `${ago(l.last_throttle)} (${l.last_throttle_reason || "?"})` : "never");
    setText("latency", `${l.latency_recent} recent, ${l.latency_baseline} baseline`);
    const counts = Object.entries(s.jobs || {}).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`);
    setText("job-counts", counts.length ? counts.join(", ") : "none");
    setText("uptime", s.uptime);
    const bytesUnit = s.rate_unit === "bytes";
    $("fig-rate").hidden = !bytesUnit;
    $("legend-rate").hidden = bytesUnit;
  }

  // ---- scopes -----------------------------------------------------------

  // renderScopes lists the scopes with a limiter of their own
  // (/v1/status "scopes"); the section is hidden when scopes are off.
  function renderScopes(s) {
    const sc = s.scopes;
    $("scopes").hidden = !sc;
    if (!sc) return;
    fill(document.querySelector("#scopes-table tbody"), (sc.active || []).map((x) => {
      const last = x.last_throttle ? `${ago(x.last_throttle)} (${x.last_reason || "?"})` : "never";
      return row([x.scope, x.phase, perSecond(x.rate_limit, s.rate_unit), num(x.concurrency_limit),
        num(x.in_flight), num(x.queue_length), last]);
    }));
    const n = (sc.active || []).length;
    $("scopes-empty").hidden = n > 0;
    $("scopes-empty").textContent = sc.evictions
      ? `No scope is throttled. ${sc.evictions} scope limiters were evicted at the bound of ${sc.max}.`
      : "No scope is throttled: every write passes the store's limiter only.";
  }

  // ---- fleet mode -------------------------------------------------------

  // renderFleet shows the fleet object of v1/status while fleet mode is
  // on, and hides the section otherwise. The sidecar fetches the member
  // list at a refresh after its status is read: it may be empty at first.
  function renderFleet(s) {
    const fl = s.fleet;
    $("fleet").hidden = !fl;
    if (!fl) return;
    const unit = s.rate_unit;
    const mode = $("fleet-mode");
    mode.textContent = fl.mode + (fl.degraded ? " · degraded: the last refresh failed" : "");
    mode.className = "mode " + fl.mode;
    setText("fleet-resource", `${fl.resource}, as ${fl.member}`);
    setText("fleet-redis", fl.redis);
    const until = fl.mode === "leased" && fl.lease_until ? " until " + clock(fl.lease_until) : " (last)";
    setText("fleet-lease", perSecond(fl.lease, unit) + until);
    setText("fleet-budget", perSecond(fl.budget, unit) + (fl.capacity ? " (configured)" : " (learned)"));
    setText("fleet-demand", `${perSecond(fl.demand, unit)}, weight ${fl.weight}`);
    setText("fleet-refresh", fl.last_refresh ? ago(fl.last_refresh) : "never");
    setText("fleet-errors", fl.refresh_errors ? `${num(fl.refresh_errors)}, last: ${fl.last_error || "?"}` : "none");
    setText("fleet-count", num(fl.member_count));
    const members = (fl.members || []).slice().sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    fill(document.querySelector("#fleet-table tbody"), members.map((m) => {
      const id = m.id === fl.member ? m.id + " (this sidecar)" : m.id;
      return row([id, String(m.weight), perSecond(m.demand, unit), perSecond(m.lease, unit), m.age]);
    }));
    $("fleet-table").hidden = members.length === 0;
    $("fleet-empty").hidden = members.length > 0;
  }

  // ---- charts -----------------------------------------------------------

  function svg(name, attrs, parent) {
    const e = document.createElementNS(SVGNS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    parent.appendChild(e);
    return e;
  }

  // niceTop rounds a maximum up to 1, 2, 2.5 or 5 times a power of ten, so
  // the axis reads in round numbers.
  function niceTop(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // span is how much of the past the charts show: the last 15 minutes,
  // or less while sluice has not been up that long (at least 2 minutes),
  // so that the first minutes are not squeezed against the right edge.
  function span(points, now) {
    if (!points.length) return 2 * 60000;
    const up = now - points[0].t;
    return Math.min(WINDOW_MS, Math.max(2 * 60000, Math.ceil(up / 60000) * 60000));
  }

  function tickLabel(ms) {
    const s = Math.round(ms / 1000);
    if (s === 0) return "now";
    return s < 120 ? `−${s}s` : `−${s / 60} min`;
  }

  // drawChart draws series (each {cls, value(point)}) over the last
  // spanMs into el, and red bands behind the seconds in which the store
  // throttled when bands is set. Points farther apart than 5 s (sluice was
  // not sampling) break the line rather than join across the gap.
  function drawChart(el, series, points, now, spanMs, bands, format) {
    const w = el.clientWidth || 600, h = el.clientHeight || 160;
    const m = { l: 52, r: 6, t: 6, b: 18 };
    el.setAttribute("viewBox", `0 0 ${w} ${h}`);
    el.replaceChildren();
    const from = now - spanMs;
    const X = (t) => m.l + ((t - from) / spanMs) * (w - m.l - m.r);
    let top = 0;
    for (const s of series) for (const p of points) if (p.t >= from) top = Math.max(top, s.value(p));
    top = niceTop(top * 1.05);
    const Y = (v) => h - m.b - (v / top) * (h - m.t - m.b);
    for (const f of [0, 0.5, 1]) {
      const y = Y(top * f);
      svg("line", { x1: m.l, x2: w - m.r, y1: y, y2: y, class: "grid" }, el);
      svg("text", { x: m.l - 5, y: y + 3, class: "axis", "text-anchor": "end" }, el).textContent = format(top * f);
    }
    const step = [30, 60, 120, 300].map((s) => s * 1000).find((s) => spanMs / s <= 5) || 300000;
    for (let ago = 0; ago <= spanMs; ago += step) {
      const x = X(now - ago);
      const anchor = ago === 0 ? "end" : x - m.l < 24 ? "start" : "middle";
      svg("text", { x, y: h - 4, class: "axis", "text-anchor": anchor }, el).textContent = tickLabel(ago);
    }
    let throttled = 0;
    if (bands) {
      for (const p of points) {
        if (!(p.throttled_per_second > 0) || p.t < from) continue;
        const x0 = Math.max(m.l, X(p.t - 1000));
        svg("rect", { x: x0, y: m.t, width: Math.max(1.5, X(p.t) - x0), height: h - m.t - m.b, class: "throttle-band" }, el);
        throttled++;
      }
    }
    for (const s of series) {
      let d = "", prev = 0;
      for (const p of points) {
        if (p.t < from) continue;
        d += (d && p.t - prev <= 5000 ? "L" : "M") + X(p.t).toFixed(1) + "," + Y(s.value(p)).toFixed(1);
        prev = p.t;
      }
      if (d) svg("path", { d, class: "line " + s.cls }, el);
    }
    if (!points.length) {
      svg("text", { x: (m.l + w) / 2, y: h / 2, class: "empty", "text-anchor": "middle" }, el).textContent = "waiting for the first samples…";
    }
    el.dataset.points = points.length;
    el.dataset.throttled = throttled;
  }

  function renderCharts() {
    const unit = (page.status && page.status.rate_unit) || "requests";
    const pts = page.points;
    const now = pts.length ? Math.max(serverNow(), pts[pts.length - 1].t) : serverNow();
    const spanMs = span(pts, now);
    setText("chart-title", spanMs >= WINDOW_MS ? "Last 15 minutes" : `Last ${spanMs / 60000} minutes (since sluice started)`);
    const acked = { cls: "acked", value: (p) => p.acknowledged_per_second };
    const throttled = { cls: "throttled", value: (p) => p.throttled_per_second };
    const rate = { cls: "rate", value: (p) => p.rate_limit };
    const writes = unit === "bytes" ? [acked, throttled] : [acked, throttled, rate];
    drawChart($("chart-writes"), writes, pts, now, spanMs, true, num);
    if (unit === "bytes") drawChart($("chart-rate"), [rate], pts, now, spanMs, false, bytes);
    drawChart($("chart-conc"), [{ cls: "conc", value: (p) => p.concurrency_limit }, { cls: "inflight", value: (p) => p.in_flight }],
      pts, now, spanMs, false, num);
    const last = pts[pts.length - 1];
    setText("v-acked", last ? num(last.acknowledged_per_second) + "/s" : "–");
    setText("v-throttled", last ? num(last.throttled_per_second) + "/s" : "–");
    setText("v-rate", last ? num(last.rate_limit) + "/s" : "–");
    setText("v-conc", last ? num(last.concurrency_limit) : "–");
    setText("v-inflight", last ? num(last.in_flight) : "–");
  }

  async function pollHistory() {
    const feed = await getJSON("v1/history?after=" + page.lastT);
    for (const p of feed.points || []) {
      if (p.t > page.lastT) { page.points.push(p); page.lastT = p.t; }
    }
    const cap = feed.capacity || 900;
    const from = page.lastT - WINDOW_MS;
    let drop = 0;
    while (drop < page.points.length && (page.points[drop].t < from || page.points.length - drop > cap)) drop++;
    if (drop) page.points.splice(0, drop);
  }

  // ---- jobs -------------------------------------------------------------

  function dur(secs) {
    if (secs < 90) return `${Math.round(secs)}s`;
    if (secs < 5400) return `${Math.round(secs / 60)}m`;
    return `${(secs / 3600).toFixed(1)}h`;
  }

  // With a declared total: how far along, and when it ends (or why that is
  // unknown). Without one, the totals only.
  function progressText(j) {
    const p = j.progress;
    if (p) {
      let s = `${(100 * p.fraction).toFixed(1)}% of ${num(p.total)} ${p.unit}`;
      if (p.eta_seconds != null) s += ` · ETA ${dur(p.eta_seconds)}`;
      else if (p.eta_unknown) s += ` · ETA unknown (${p.eta_unknown.replace(/_/g, " ")})`;
      return s;
    }
    const t = j.totals || {}, parts = [`${num(t.requests)} writes`, bytes(t.bytes)];
    if (t.items) parts.push(`${num(t.items)} items`);
    if (j.loader && j.loader.records) parts.push(`${num(j.loader.records)} records (loader)`);
    return parts.join(" · ");
  }
  function rateText(j) {
    const r = j.rate || {};
    let s = num(r.requests_per_second) + " writes/s";
    if (r.records_per_second) s += ` · ${num(r.records_per_second)} records/s`;
    return s;
  }

  // A job's share of the limiter's recent grants, and its writes' mean
  // wait in the queue for them (the fair queue between jobs).
  function shareText(j) {
    return `${(100 * (j.share || 0)).toFixed(1)}% · ${(1000 * (j.queue_wait_seconds || 0)).toFixed(1)} ms wait`;
  }

  function renderJobs(jobs) {
    fill(document.querySelector("#jobs-table tbody"), jobs.map((j) => {
      const link = node("a", j.id);
      link.href = "#job/" + encodeURIComponent(j.id);
      const tr = row([link, stateBadge(j.state, cause(j)), ago(j.since), j.priority || "–", num(j.weight), shareText(j),
        progressText(j), rateText(j), ago(j.last_progress)]);
      tr.dataset.job = j.id;
      if (j.id === page.selected) tr.className = "selected";
      return tr;
    }));
    $("jobs-empty").hidden = jobs.length > 0;
  }

  document.querySelector("#jobs-table tbody").addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr");
    if (tr && tr.dataset.job && !ev.target.closest("a")) location.hash = "#job/" + encodeURIComponent(tr.dataset.job);
  });

  // jobFromHash is the job a link names, or null. A part that is not
  // valid percent-encoding (a link cut short) names none: decoding it
  // throws, which would stop the page before its first refresh.
  // A job id as sluice takes one (state.ValidJobID): anything else in a
  // link names no job. ".." would otherwise reach the API as a path
  // segment (a cancel of "v1/jobs/.." is a POST to v1/cancel).
  const JOB_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
  function jobFromHash() {
    const m = location.hash.match(/^#job\/(.+)$/);
    if (!m) return null;
    let id;
    try {
      id = decodeURIComponent(m[1]);
    } catch (e) {
      return null;
    }
    return JOB_ID.test(id) ? id : null;
  }

  // clearJob empties the job's detail, so that a job not found (or not
  // read yet) is never shown with the fields of the one open before it.
  function clearJob() {
    $("job-state").textContent = "";
    $("job-state").className = "state";
    $("job-fields").replaceChildren();
    document.querySelector("#job-history tbody").replaceChildren();
    document.querySelector("#job-attempts tbody").replaceChildren();
    renderActions(null); // nothing to act on until the job is read
  }

  function selectFromHash() {
    const id = jobFromHash();
    if (id !== page.selected) {
      page.selected = id;
      page.job = null;
      page.confirming = null;
      $("confirm").hidden = true;
      message("", "");
      clearJob();
    }
    $("job").hidden = !id;
    if (id) setText("job-id", id);
  }
  window.addEventListener("hashchange", () => { selectFromHash(); tick(); });
  $("job-close").addEventListener("click", () => { history.replaceState(null, "", location.pathname + location.search); selectFromHash(); });

  function renderJob(j) {
    const st = $("job-state");
    st.textContent = j.state;
    st.className = "state " + j.state;
    const fields = [];
    const add = (k, v) => {
      if (v === undefined || v === null || v === "") return;
      fields.push(node("dt", k), node("dd", String(v)));
    };
    const t = j.totals || {};
    add("reason", j.reason);
    add("stall cause", j.stall_cause);
    add("since", `${clock(j.since)} (${ago(j.since)})`);
    add("created", clock(j.created));
    add("progress", progressText(j));
    add("rate", rateText(j));
    add("last progress", j.last_progress ? `${clock(j.last_progress)} (${ago(j.last_progress)})` : "none yet");
    add("in flight", j.in_flight);
    add("class", j.priority);
    add("weight", j.weight);
    add("share of recent grants", `${shareText(j)} (longest ${(1000 * (j.queue_wait_max_seconds || 0)).toFixed(1)} ms) · ${num(j.queued)} queued`);
    add("refused by the store", `${num(t.throttled)} throttled · ${num(t.timeouts)} timed out · ${num(t.errors)} errors`);
    add("stalls", j.stalls);
    add("next probe", j.probe_at ? clock(j.probe_at) : "");
    if (j.settings) {
      const s = j.settings;
      add("stall after", s.stall_after);
      add("cancel grace", s.cancel_grace);
      add("deadline", s.deadline);
      add("auto cancel", s.auto_cancel ? "yes" : "no");
    }
    if (j.labels) add("labels", Object.entries(j.labels).map(([k, v]) => `${k}=${v}`).join(" "));
    const c = j.checkpoint;
    if (c) add("checkpoint", `#${c.seq} at ${clock(c.at)}: ${JSON.stringify(c.data ?? null)}`.slice(0, 300));
    fill($("job-fields"), fields);

    fill(document.querySelector("#job-history tbody"),
      [...(j.history || [])].reverse().map((tr) => row([clock(tr.at), tr.from, stateBadge(tr.to), tr.reason])));
    const attempts = [...(j.attempts || [])].reverse().map((a) => {
      const detail = [a.status ? "HTTP " + a.status : "", a.exit_code !== undefined ? "exit " + a.exit_code : "", a.error || ""].filter(Boolean).join(" · ");
      return row([clock(a.at), a.action, String(a.n), a.result, detail]);
    });
    if (!attempts.length) attempts.push(row(["–", "none run", "", "", ""]));
    fill(document.querySelector("#job-attempts tbody"), attempts);
    renderActions(j);
  }

  // ---- actions ----------------------------------------------------------

  const ACTION_TEXT = {
    cancel: "Cancel job %s? sluice refuses its writes from now on and runs its cancel and cleanup actions.",
    complete: "Mark job %s completed? sluice stops watching it for stalls.",
    reopen: "Reopen job %s? It takes writes again.",
  };

  function renderActions(j) {
    for (const b of document.querySelectorAll("#actions [data-action]")) {
      const a = b.dataset.action;
      const offered = page.caps ? page.caps.actions[a] : a !== "reopen";
      b.hidden = !offered || page.hidden.has(a);
      b.disabled = !j || (a === "reopen" ? LIVE.has(j.state) : TERMINAL.has(j.state));
    }
  }

  function message(text, cls) {
    const el = $("action-msg");
    el.textContent = text;
    el.className = "note " + (cls || "");
  }

  $("actions").addEventListener("click", (ev) => {
    const b = ev.target.closest("[data-action]");
    if (!b || !page.selected) return;
    page.confirming = b.dataset.action;
    setText("confirm-text", ACTION_TEXT[page.confirming].replace("%s", page.selected));
    $("confirm").hidden = false;
    $("confirm-yes").focus();
  });
  $("confirm-no").addEventListener("click", () => { page.confirming = null; $("confirm").hidden = true; });
  $("confirm-yes").addEventListener("click", async () => {
    const action = page.confirming, id = page.selected;
    page.confirming = null;
    $("confirm").hidden = true;
    if (action && id) await act(action, id);
  });

  // act sends the action as the API defines it: the server decides, with
  // the token if one was given, exactly as for any other client.
  async function act(action, id) {
    const headers = { Accept: "application/json" };
    const tok = token();
    if (tok) headers.Authorization = "Bearer " + tok;
    const init = { method: "POST", headers, cache: "no-store" };
    if (action === "cancel") {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify({ reason: "cancelled from the status page" });
    }
    message(`${action}: sending…`, "");
    let r, body = null;
    try {
      r = await fetch(`v1/jobs/${encodeURIComponent(id)}/${action}`, init);
      body = await r.json().catch(() => null);
    } catch (e) {
      message(`${action} not sent: ${e.message}`, "error");
      return;
    }
    const why = body && body.message ? `${body.error}: ${body.message}` : r.statusText;
    if (r.ok) {
      message(`${action} accepted: job ${id} is ${body ? body.state : "updated"}.`, "ok");
    } else if (r.status === 401 || r.status === 403) {
      message(`${action} refused (${r.status} ${why}). ` +
        (tok ? "The admin token given was not accepted." : "No admin token given: enter SLUICE_ADMIN_TOKEN above."), "error");
    } else if (r.status === 405 || (r.status === 404 && body && body.error === "not_found")) {
      page.hidden.add(action);
      message(`This sluice has no ${action} endpoint.`, "error");
    } else {
      message(`${action} failed (${r.status} ${why}).`, "error");
    }
    await tick();
  }

  // ---- the loop ---------------------------------------------------------

  let running = false;
  async function tick() {
    if (running) return;
    running = true;
    try {
      const sent = Date.now();
      const [status, jobs] = await Promise.all([getJSON("v1/status").then((s) => {
        // The sidecar read its clock about halfway between the request
        // and the answer.
        const at = Date.parse(s.now);
        if (!Number.isNaN(at)) page.offset = at - (sent + Date.now()) / 2;
        return s;
      }), getJSON("v1/jobs"), pollHistory()]);
      page.status = status;
      renderStatus(status);
      renderScopes(status);
      renderFleet(status);
      renderCharts();
      renderJobs(jobs.jobs || []);
      if (page.selected) {
        const id = page.selected;
        try {
          const j = await getJSON("v1/jobs/" + encodeURIComponent(id));
          if (id === page.selected) { page.job = j; renderJob(j); }
        } catch (e) {
          if (e.status !== 404) throw e;
          if (id === page.selected) {
            page.job = null;
            clearJob();
            setText("job-state", "not found");
            renderActions(null);
          }
        }
      }
      $("banner").hidden = true;
    } catch (e) {
      $("banner").textContent = "Cannot read the admin API: " + e.message + ". Retrying every second.";
      $("banner").hidden = false;
    } finally {
      running = false;
    }
  }

  async function start() {
    try {
      page.caps = await getJSON("ui/page.json");
    } catch (e) {
      page.caps = null;
    }
    renderToken();
    selectFromHash();
    await tick();
    setInterval(tick, POLL_MS);
    window.addEventListener("resize", renderCharts);
  }
  start();
})();
