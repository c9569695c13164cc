// knightwatch console: the live stream, the tables, and the buttons.
// No framework and no build step. Data is only ever inserted as text (never as HTML).
// The kill button does not depend on the stream: it is a plain POST and stays usable when STALE.

const body = document.body;
const csrf = body.dataset.csrf || "";
const me = body.dataset.user || "";
const beatMs = Number(body.dataset.heartbeatMs || 1000);
const can = (what) => body.dataset[what] === "1";
const $ = (id) => document.getElementById(id);

// every time shown names its zone: a request's "expires 04:10" or a node's last confirmation
// had none (only some columns' headers said UTC), and an operator off UTC read it as local
function utc(ns) {
  if (!ns) return "-";
  return new Date(Number(ns) / 1e6).toISOString().replace("T", " ").slice(0, 23) + " UTC";
}

// What others write (a reason from the CLI, a node's host, a refusal) has no bound of its
// own: shown whole, one 100 kB reason made a halts row and the approval dialog pages long.
const SHOWN_MAX = 1000;

function cut(text) {
  const s = text === undefined || text === null ? "" : String(text);
  return s.length > SHOWN_MAX ? `${s.slice(0, SHOWN_MAX)}… (${s.length - SHOWN_MAX} more characters)` : s;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = cut(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function button(td, label, cls, onclick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.type = "button";
  if (cls) b.className = cls;
  b.addEventListener("click", onclick);
  td.appendChild(b);
  return b;
}

function fill(id, rows, render) {
  const table = $(id);
  if (!table) return;
  const tbody = table.tBodies[0];
  tbody.replaceChildren();
  for (const item of rows) {
    const tr = document.createElement("tr");
    render(tr, item);
    tbody.appendChild(tr);
  }
}

// status 0: no answer at all (the console is down or restarting). It was an exception no one
// caught: a kill sent then stayed "waiting for confirmations…" for good, never NOT CONFIRMED.
const NO_ANSWER = "the console did not answer: it may not have been sent. Use `knightwatch kill` from a terminal (docs/runbook.md)";

async function post(path, payload) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(payload),
      credentials: "same-origin",
    });
  } catch (e) {
    return { status: 0, data: { error: `${NO_ANSWER} (${e})` } };
  }
  let data = {};
  try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
  return { status: response.status, data };
}

function say(text, bad) {
  const p = $("action-message");
  if (!p) return;
  p.textContent = text;
  p.className = bad ? "error" : "ok";
}

// ------------------------------------------------------------------ live stream
// When the last beat came, on the browser's monotonic clock: on the wall clock (Date.now) a
// step back (NTP, a resume, a hand-set time) kept a frozen page LIVE for as long as the step.
// -Infinity until the first beat: no beat heard is never LIVE.
let lastBeat = -Infinity;
let snapshot = null;
// the console said it cannot rebuild the fleet view (a `problem` event): what is shown is the
// last snapshot, not the fleet now, so STALE until a new snapshot arrives, whatever the beats
// say (they come from the console, not the fleet: a problem counted as one kept it LIVE)
let viewBroken = false;

function markStale() {
  const badge = $("stream");
  if (!badge) return;
  const stale = viewBroken || performance.now() - lastBeat > 3 * beatMs;
  badge.textContent = stale ? "STALE" : "LIVE";
  badge.className = stale ? "badge stale" : "badge live";
  body.classList.toggle("stale", stale);
}

function connect() {
  const source = new EventSource("/api/events");
  const beat = () => { lastBeat = performance.now(); markStale(); };
  source.addEventListener("beat", beat);
  source.addEventListener("snapshot", (e) => { viewBroken = false; beat(); snapshot = JSON.parse(e.data); render(snapshot); });
  source.addEventListener("confirm", (e) => { beat(); onConfirm(JSON.parse(e.data)); });
  source.addEventListener("problem", (e) => { viewBroken = true; beat(); showProblems([JSON.parse(e.data).error]); });
  // the server ended the stream: logged out, expired, disabled or a password change
  source.addEventListener("ended", () => { source.close(); window.location.assign("/login"); });
  // the page fell behind and missed events: STALE until a new stream's snapshot arrives
  source.addEventListener("gap", () => { source.close(); lastBeat = -Infinity; markStale(); connect(); });
  window.knightwatchStream = source;
}

function showProblems(list) {
  const p = $("problems");
  if (!p) return;
  p.hidden = !list.length;
  p.textContent = list.length ? "could not read: " + list.map(cut).join("; ") : "";
}

// ------------------------------------------------------------------ rendering
function render(s) {
  showProblems(s.problems || []);
  fill("nodes", s.nodes, (tr, n) => {
    if (n.unreadable) {
      // a membership record the control plane cannot read (or one naming another node):
      // nothing in it is known, so it is shown as that, with the reason, never as a node
      tr.className = "bad";
      tr.dataset.unreadable = "1";
      cell(tr, n.node);
      cell(tr, "UNREADABLE", "red");
      cell(tr, "no lease", "red");
      cell(tr, "REFUSED", "red");
      cell(tr, "no");
      cell(tr, "UNREADABLE (held HALTED)", "red");
      cell(tr, "-");
      cell(tr, "-");
      cell(tr, n.unreadable, "red");
      return;
    }
    if (n.expired || n.duplicate || n.refused) tr.className = "bad";
    cell(tr, n.node);
    cell(tr, n.host);
    cell(tr, n.left ? "left" : n.expired ? `EXPIRED ${(-n.lease_ms / 1000).toFixed(1)} s ago` : `${(n.lease_ms / 1000).toFixed(1)} s`, n.expired ? "red" : "");
    cell(tr, n.admitted ? n.release || "admitted" : "REFUSED", n.admitted ? "" : "red");
    cell(tr, n.armed ? "yes" : "no");
    cell(tr, n.state, n.state === "ACTIVE" ? "green" : n.state === "REDUCING" ? "amber" : "red");
    cell(tr, Object.entries(n.flag_revisions).map(([f, r]) => `${f} r${r}`).join(", ") || "-");
    cell(tr, n.last_command ? `${n.last_command.slice(0, 8)} ${utc(n.last_confirmed_ns)}` : "-");
    cell(tr, n.refused ? `${n.refused} (${n.last_refusal})` + (n.duplicate ? ` DUPLICATE at ${n.duplicate}` : "") : "0");
  });
  const refusals = $("refusals");
  if (refusals) {
    refusals.replaceChildren();
    for (const a of s.admission.filter((a) => !a.admitted)) {
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = cut(`admission refused ${a.node} (${a.status}): ${a.findings.join("; ") || a.status}`);
      refusals.appendChild(p);
    }
  }
  fill("halts", s.halts, (tr, h) => {
    if (h.state !== "ACTIVE") tr.className = "bad";
    if (h.malformed) {
      // a stored key that is no slot: shown by its key, never as the slot it resembles,
      // and with no resume button (no kill or resume can address it)
      tr.dataset.malformed = "1";
      cell(tr, `MALFORMED KEY ${h.slot}`, "red");
      cell(tr, `${h.malformed}; ${h.state === "MALFORMED" ? h.refusal : `nodes hold ${h.scope} ${h.key} ${h.state}: ${h.refusal}`}`, "red");
      cell(tr, h.source);
      cell(tr, h.actor);
      cell(tr, h.reason);
      cell(tr, utc(h.issued_ns));
      cell(tr, h.revision);
      cell(tr, "");
      return;
    }
    cell(tr, `${h.scope} ${h.key}`);
    cell(tr, h.verified ? h.state : `UNVERIFIED (held HALTED): ${h.refusal}`, h.state === "ACTIVE" ? "green" : h.verified && h.state === "REDUCING" ? "amber" : "red");
    cell(tr, h.source);
    cell(tr, h.actor + (h.approvers.length ? ` (approved by ${h.approvers.join(", ")})` : ""));
    cell(tr, h.reason);
    cell(tr, utc(h.issued_ns));
    cell(tr, h.revision);
    const td = cell(tr, "");
    if (can("canRequest") && h.state !== "ACTIVE") {
      button(td, "request resume", "", () => openResume(h));
    }
  });
  fill("requests", s.requests, (tr, r) => {
    tr.dataset.request = r.id;
    cell(tr, r.id);
    cell(tr, r.status.toUpperCase(), r.status === "pending" ? "amber" : r.status === "applied" ? "green" : "red");
    cell(tr, `${r.scope} ${r.key}`);
    cell(tr, r.requester + (r.approvers.length ? ` + ${r.approvers.join(", ")}` : ""));
    cell(tr, r.needed || "-");
    cell(tr, r.reason);
    cell(tr, r.preflight || "-");
    cell(tr, r.ramp);
    cell(tr, r.status === "pending" ? `expires ${utc(r.expires_ns)}` : r.detail);
    const td = cell(tr, "");
    if (can("canApprove") && r.status === "pending" && r.requester !== me) {
      button(td, "approve", "", () => openApprove(r));
    }
  });
  fill("ramps", s.ramps, (tr, r) => {
    cell(tr, r.slot);
    cell(tr, r.ramp_id);
    cell(tr, `${r.stage + 1}/${r.stages}`);
    cell(tr, `${Math.round(r.fraction * 100)}%`);
    cell(tr, r.status, r.status === "tripped" ? "red" : r.status === "done" ? "green" : "amber");
    cell(tr, r.signed_by ? `${r.actor} (signed by ${r.signed_by})` : `UNVERIFIED: ${r.refusal}`, r.signed_by ? "" : "red");
    cell(tr, r.trip_reason || "-");
  });
  fill("flags", s.flags, (tr, f) => {
    cell(tr, f.flag);
    cell(tr, `r${f.revision}`);
    cell(tr, Object.entries(f.values).map(([n, v]) => `${n}=${v ? "on" : "off"}`).join(", ") || "safe default everywhere");
    cell(tr, Object.entries(f.applied).map(([n, r]) => `${n} r${r}`).join(", ") || "-");
    cell(tr, f.pending.join(", ") || "-", f.pending.length ? "amber" : "");
    const td = cell(tr, "");
    if (can("canFlags")) button(td, "safe default", "danger", () => stopFlag("/api/flags/safe-default", f.flag));
  });
  fill("rollouts", s.rollouts, (tr, r) => {
    cell(tr, r.flag);
    cell(tr, r.rollout_id);
    cell(tr, r.status, r.status === "aborted" ? "red" : r.status === "completed" ? "green" : "amber");
    cell(tr, `${r.stage} (${r.stage_index + 1}/${r.stages})`);
    cell(tr, `${r.exposed.length}/${r.nodes.length}`);
    cell(tr, `${r.started_by} / ${r.approver || "-"}`);
    cell(tr, r.hold_reason || r.abort_reason || "-");
    const td = cell(tr, "");
    if (can("canFlags") && r.status === "progressing") button(td, "abort", "danger", () => stopFlag("/api/rollouts/abort", r.flag));
  });
  renderAlerts(s);
}

let acks = {};
async function loadAcks() {
  const response = await fetch("/api/alerts/acks", { credentials: "same-origin" });
  if (!response.ok) return;
  acks = {};
  for (const a of await response.json()) acks[`${a.slot}@${a.revision}`] = a;
  if (snapshot) renderAlerts(snapshot);
}

function renderAlerts(s) {
  const automatic = s.halts.filter((h) => h.source !== "operator");
  fill("alerts", automatic, (tr, h) => {
    const ack = acks[`${h.slot}@${h.revision}`];
    if (!ack) tr.className = "bad";
    cell(tr, h.malformed ? `MALFORMED KEY ${h.slot}` : `${h.scope} ${h.key}`);
    cell(tr, h.source);
    cell(tr, h.verified || h.malformed ? `${h.state}: ${h.reason}` : `UNVERIFIED (held HALTED): ${h.reason}`);
    cell(tr, utc(h.issued_ns));
    cell(tr, ack ? `${ack.by} ${utc(ack.at_ns)}: ${ack.note}` : "no");
    const td = cell(tr, "");
    if (can("canAck") && !ack) {
      button(td, "acknowledge", "", async () => {
        const note = prompt("Acknowledge: what are you doing about it?");
        if (!note) return;
        const { status, data } = await post("/api/alerts/ack", { slot: h.slot, revision: h.revision, note });
        say(status === 200 ? `acknowledged by ${data.by}` : `refused: ${data.error}`, status !== 200);
        await loadAcks();
      });
    }
  });
}

async function stopFlag(path, flag) {
  const reason = prompt(`Reason (recorded): ${path.includes("abort") ? "abort the rollout of" : "turn to its safe default"} ${flag}`);
  if (!reason) return;
  const { status, data } = await post(path, { flag, reason });
  // an abort not confirmed by every exposed node (or with a switch-off not done) is red
  say(status === 200 ? data.detail + (data.reason_cleaned ? `; ${data.reason_cleaned}` : "") : `refused (${status}): ${data.error}`, status !== 200 || data.ok === false);
}

// ------------------------------------------------------------------ kill
// Every kill sent from this page has its own result: its title, its rows and its line of what
// is missing, drawn into its own elements and never into another's. Two kills in flight at once
// shared one panel: the older one's late answer overwrote the newer one's title and rows (a
// refused or unconfirmed newer kill read as the older one's "every live node confirmed"), and
// marked the newer one finished so its own confirmations stopped showing. The newest kill
// holds the ids (#kill-result-title, #kill-rows, #kill-missing) and sits on top; earlier ones
// stay below it, each titled with its own scope, until KILLS_SHOWN newer ones have been sent.
const KILLS_SHOWN = 20;
let killing = null; // the newest kill
let killCount = 0;
const kills = []; // every kill still shown, newest first

function killPanel() {
  const div = document.createElement("div");
  div.className = "kill-one";
  const title = document.createElement("h3");
  const table = document.createElement("table");
  table.className = "kill-rows";
  const head = table.createTHead().insertRow();
  for (const h of ["node", "confirmed"]) { const th = document.createElement("th"); th.textContent = h; head.appendChild(th); }
  table.createTBody();
  const missing = document.createElement("p");
  missing.className = "error";
  div.append(title, table, missing);
  return { div, title, tbody: table.tBodies[0], table, missing };
}

function killTarget() {
  const scope = $("kill-scope").value;
  const key = scope === "fleet" ? "" : $("kill-key").value.trim();
  return { scope, key, word: scope === "fleet" ? "KILL" : key };
}

function setupKill() {
  const form = $("kill-form");
  if (!form) return;
  $("kill-scope").addEventListener("change", () => { $("kill-key").disabled = $("kill-scope").value === "fleet"; });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const t = killTarget();
    if (!$("kill-reason").value.trim()) { say("a kill needs a reason", true); $("kill-reason").focus(); return; }
    if (t.scope !== "fleet" && !t.key) { say("name the node, strategy or symbol", true); return; }
    $("kill-dialog-text").textContent = `${$("kill-drain").checked ? "DRAIN" : "KILL"} ${t.scope === "fleet" ? "the whole fleet" : `${t.scope} ${t.key}`}: ${$("kill-reason").value}`;
    $("kill-word").textContent = t.word;
    $("kill-confirm").value = "";
    $("kill-now").disabled = true;
    $("kill-dialog").showModal();
    $("kill-confirm").focus();
  });
  $("kill-confirm").addEventListener("input", () => { $("kill-now").disabled = $("kill-confirm").value !== killTarget().word; });
  // "Kill now" is the form's first button, so Enter is "Kill now" once the word matches and
  // nothing before (it is disabled); cancel was first, and Enter after typing the word closed
  // the dialog as cancelled, with nothing posted and nothing said
  closes("kill-cancel", "kill-dialog");
  $("kill-confirm-form").addEventListener("submit", async (e) => {
    const go = e.submitter && e.submitter.value === "go";
    if (!go) return;
    const t = killTarget();
    const payload = { scope: t.scope, key: t.key, reason: $("kill-reason").value, drain: $("kill-drain").checked, confirm: $("kill-confirm").value };
    // the rows are only drawing: nothing in them may keep the kill from being posted (a
    // snapshot without nodes, "{}" from a console that had built none yet, threw here and
    // the page said "waiting for confirmations…" for a kill it never sent)
    let kill = null;
    try { kill = startKillRows(t); } catch (err) { console.error("kill rows:", err); }
    const clicked = performance.now();
    const { status, data } = await post("/api/kill", payload);
    finishKill(kill, status, data, performance.now() - clicked);
  });
}

function startKillRows(t) {
  // rows by node id in a Map: a plain object already holds "constructor", "__proto__" and
  // "toString", all names the roster allows a node, and drawing such a node's row raised
  // before the kill was posted (the page said "waiting for confirmations…"; nothing was sent)
  const panel = killPanel();
  const kill = { n: ++killCount, scope: t.scope, key: t.scope === "fleet" ? "fleet" : t.key, since: Date.now() * 1e6, rows: new Map(), finished: false, ...panel };
  if (killing) {
    // the kill before this one keeps its own panel, below, under its own title
    for (const el of [killing.title, killing.table, killing.missing]) el.removeAttribute("id");
    killing.div.classList.add("earlier");
    killing.title.textContent = `earlier kill #${killing.n}: ${killing.title.textContent}`;
  }
  kill.title.id = "kill-result-title";
  kill.table.id = "kill-rows";
  kill.missing.id = "kill-missing";
  kill.div.dataset.kill = String(kill.n);
  kill.div.dataset.scope = `${t.scope} ${t.key}`;
  const box = $("kill-result");
  box.prepend(kill.div);
  box.hidden = false;
  kills.unshift(kill);
  while (kills.length > KILLS_SHOWN) kills.pop().div.remove();
  killing = kill;
  kill.title.textContent = `${t.scope} ${t.key}: waiting for confirmations…`;
  try {
    // a node kill waits for its one node (no other node answers a kill naming another):
    // the others' rows said "waiting" in amber for good under "every live node confirmed"
    const live = snapshot && Array.isArray(snapshot.nodes) ? snapshot.nodes.filter((n) => !n.left && !n.expired && (t.scope !== "node" || n.node === t.key)) : [];
    for (const n of live) killRow(kill, n.node, "waiting", "amber");
  } catch (err) { console.error("kill rows:", err); }
  return kill;
}

function killRow(kill, node, text, cls) {
  let tr = kill.rows.get(node);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.node = node;
    cell(tr, node);
    cell(tr, "");
    kill.tbody.appendChild(tr);
    kill.rows.set(node, tr);
  }
  tr.cells[1].textContent = text;
  tr.cells[1].className = cls;
}

function onConfirm(c) {
  for (const kill of kills) {
    if (c.scope !== kill.scope || c.key !== kill.key) continue;
    if (c.state === "ACTIVE" || c.applied_ns < kill.since - 5e9) continue;
    if (kill.finished) continue; // the result's measured latency stays; a late echo does not undo it
    killRow(kill, c.node, "confirmed", "green");
  }
}

function finishKill(kill, status, data, ms) {
  // a kill whose panel could not be drawn still shows its answer, in a panel of its own
  if (!kill) kill = startKillRows({ scope: data.scope || "?", key: data.key || "" });
  kill.finished = true;
  // only the newest kill speaks for the page's last kill; an earlier one's answer is its own
  const newest = kill === killing;
  const last = (what) => { if (newest) body.dataset.lastKill = what; };
  const earlier = newest ? "" : `earlier kill #${kill.n}: `;
  const title = kill.title;
  if (status === 0) {
    // no answer: not known to be sent, stored or confirmed; red, never "waiting"
    title.textContent = `${earlier}NO ANSWER: ${kill.scope} ${kill.key} is NOT confirmed (${ms.toFixed(0)} ms in this browser)`;
    title.className = "error";
    for (const node of kill.rows.keys()) killRow(kill, node, "NO ANSWER", "red");
    kill.missing.textContent = data.error;
    last("no-answer");
    return;
  }
  if (data.sent === false) {
    // never reached the control plane: no node has it, nothing is stored; say so in red,
    // with what to do instead, and never as a kill that was done
    title.textContent = `${earlier}NOT SENT: ${data.scope} ${data.key} was NOT killed (${ms.toFixed(0)} ms in this browser)`;
    title.className = "error";
    for (const node of kill.rows.keys()) killRow(kill, node, "NOT SENT", "red");
    for (const node of data.targets || []) killRow(kill, node, "NOT SENT", "red");
    kill.missing.textContent = data.error;
    last("not-sent");
    return;
  }
  if (status !== 200 && !("ok" in data)) {
    // refused (logged out, a restarted console, a bad field): no node confirms this kill, and
    // its rows said "waiting" in amber for good (a confirmation of another's kill of the
    // scope then turned them green)
    title.textContent = `${earlier}refused (${status}): ${kill.scope} ${kill.key}: ${data.error}`;
    title.className = "error";
    for (const node of kill.rows.keys()) killRow(kill, node, `NOT CONFIRMED (refused ${status})`, "red");
    last("refused");
    return;
  }
  title.className = data.ok ? "green" : "red";
  const took = `(${ms.toFixed(0)} ms in this browser)`;
  title.textContent = earlier + (status === 503
    ? `NOT DONE: ${data.scope} ${data.key} was sent, but no node confirmed it and it was not stored ${took}`
    : `${data.state} ${data.scope} ${data.key}: ${data.ok ? "every live node confirmed" : "NOT every node confirmed"} ${took}`);
  for (const [node, lat] of Object.entries(data.latencies_ms)) killRow(kill, node, `${lat.toFixed(1)} ms`, "green");
  for (const m of data.missing) killRow(kill, m.node, `NOT CONFIRMED (lease ${m.lease})`, "red");
  // a node the page believed live that the answer neither confirmed nor awaited (the
  // membership could not be read: only the nodes heard from were awaited) is not confirmed,
  // never left "waiting" for good
  const answered = new Set([...Object.keys(data.latencies_ms), ...data.missing.map((m) => m.node)]);
  for (const node of kill.rows.keys()) if (!answered.has(node)) killRow(kill, node, "NOT CONFIRMED (not awaited by this kill)", "red");
  const missing = data.missing.map((m) => m.node);
  kill.missing.textContent = missing.length ? `not confirmed: ${missing.join(", ")}` : "";
  if (data.durable_error) kill.missing.textContent += ` store: ${data.durable_error}`;
  if (data.error) kill.missing.textContent += ` ${data.error}`;
  // a reason too long or with a line break was sent cleaned, never refused: say what went out
  if (data.reason_cleaned) kill.missing.textContent += ` ${data.reason_cleaned}`;
  last(data.ok ? "confirmed" : "unconfirmed");
}

// ------------------------------------------------------------------ resume
let resumeTarget = null;
let approveTarget = null;

function showChecklist(data) {
  if (!data.items) return;
  $("preflight").hidden = false;
  fill("preflight-items", data.items, (tr, i) => {
    cell(tr, i.name);
    cell(tr, i.ok ? "ok" : "FAIL", i.ok ? "green" : "red");
    cell(tr, i.detail);
  });
  $("preflight-verdict").textContent = data.passed ? "preflight passed" : "preflight REFUSED: fix the failing checks";
}

function acks_of(text) {
  return text.split(",").map((x) => x.trim()).filter((x) => x);
}

function openResume(h) {
  resumeTarget = h;
  $("resume-text").textContent = `Request a resume of ${h.scope} ${h.key} (halted by ${h.actor}: ${cut(h.reason)}). A different person must approve.`;
  $("resume-reason").value = "";
  // a Guard cause is acknowledged for this halt by this person, never carried over from the
  // last dialog (it was sent with the next halt's request unless someone noticed it)
  $("resume-ack").value = "";
  $("resume-dialog").showModal();
}

function openApprove(r) {
  approveTarget = r;
  $("approve-text").textContent = `Approve ${r.requester}'s resume of ${r.scope} ${r.key}: ${cut(r.reason)}. Resuming an operator kill does not lift a Guard halt.`;
  $("approve-reason").value = "";
  $("approve-password").value = "";
  $("approve-ack").value = "";
  $("approve-dialog").showModal();
}

// a dialog's cancel is a plain button after its submit button (Escape cancels too), so Enter
// in the dialog submits it instead of cancelling it without a word
function closes(button, dialog) {
  $(button).addEventListener("click", () => $(dialog).close("cancel"));
}

function setupResume() {
  const rf = $("resume-form");
  if (!rf) return;
  closes("resume-cancel", "resume-dialog");
  closes("approve-cancel", "approve-dialog");
  rf.addEventListener("submit", async (e) => {
    if (!e.submitter || e.submitter.value !== "go" || !resumeTarget) return;
    const h = resumeTarget;
    // the halt as the dialog shows it: one stored again since is refused, never requested unseen
    const { status, data } = await post("/api/resume/request", { scope: h.scope, key: h.scope === "fleet" ? "" : h.key, reason: $("resume-reason").value, ack: acks_of($("resume-ack").value), revision: h.revision });
    showChecklist(data);
    say(status === 200 ? `resume requested: ${data.request_id}; a second person approves it` : `refused (${status}): ${data.error}`, status !== 200);
  });
  $("approve-form").addEventListener("submit", async (e) => {
    if (!e.submitter || e.submitter.value !== "go" || !approveTarget) return;
    const r = approveTarget;
    const { status, data } = await post("/api/resume/approve", { request_id: r.id, scope: r.scope, key: r.key, digest: r.digest, password: $("approve-password").value, reason: $("approve-reason").value, ack: acks_of($("approve-ack").value) });
    $("approve-password").value = "";
    showChecklist(data);
    say(status === 200 ? `approved ${r.id}: the resume is ramping back` : `refused (${status}): ${data.error}`, status !== 200);
  });
}

// ------------------------------------------------------------------ audit page
function setupAudit() {
  const form = $("audit-form");
  if (!form) return;
  const ns = (id) => { const v = $(id).value; return v ? String(Date.parse(v + "Z") * 1e6) : ""; };
  // the page's first search and the operator's run at once: only the latest one's answer
  // is shown (an earlier, unfiltered answer arriving last overwrote the operator's search)
  let latest = 0;
  const search = async () => {
    const mine = ++latest;
    const q = new URLSearchParams();
    for (const [k, id] of [["actor", "q-actor"], ["action", "q-action"], ["scope", "q-scope"]]) if ($(id).value) q.set(k, $(id).value);
    if (ns("q-since")) q.set("since_ns", ns("q-since"));
    if (ns("q-until")) q.set("until_ns", ns("q-until"));
    $("audit-export").href = "/api/audit/export?" + q.toString();
    const response = await fetch("/api/audit?" + q.toString(), { credentials: "same-origin" });
    let data = {};
    try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
    if (mine !== latest) return;
    if (response.status === 401) { window.location.assign("/login"); return; }
    if (!response.ok) {
      // a refusal is no search: it has no chain verdict (it read "CHAIN BROKEN: undefined")
      $("audit-chain").textContent = `refused (${response.status}): ${data.error}`;
      $("audit-chain").className = "error";
      fill("audit-rows", [], () => {});
      return;
    }
    $("audit-chain").textContent = data.intact ? `chain intact, head ${data.chain_head.slice(0, 16)}…` : `CHAIN BROKEN: ${data.problem}`;
    $("audit-chain").className = data.intact ? "green" : "red";
    fill("audit-rows", data.records, (tr, r) => {
      if (r.status >= 400) tr.className = "bad";
      for (const v of [r.seq, utc(r.ts), r.actor, r.action, [r.scope, r.key].filter((x) => x).join(" "), r.status, r.result, r.ip, r.detail]) cell(tr, v);
    });
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
  search();
  $("why-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = $("why-id").value.trim();
    if (!id) return;
    const response = await fetch("/api/why/" + encodeURIComponent(id), { credentials: "same-origin" });
    const data = await response.json();
    $("why-out").textContent = response.ok ? JSON.stringify(data, null, 2) : data.error;
  });
}

function setupLogout() {
  const form = $("logout");
  if (!form) return;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
    window.location = "/login";
  });
}

setupLogout();
setupKill();
setupResume();
setupAudit();
if (me) {
  connect();
  setInterval(markStale, 250);
  if ($("alerts")) { loadAcks(); setInterval(loadAcks, 5000); }
}
