// helios dashboard: the runs list and a run's page, kept current by server-sent events (no reloads).
"use strict";
const token = document.querySelector('meta[name="helios-token"]').content;
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function age(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  return `${Math.round(seconds / 3600)}h ago`;
}
const fps = (v) => (v == null ? "–" : `${v.toFixed(1)} fps`);
const eta = (s) => (s == null ? "–" : s < 60 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);
const cost = (c) => (c == null ? "–" : `$${c.toFixed(4)}`);

function listen(url, event, render) {
  const source = new EventSource(url);
  source.addEventListener(event, (message) => { $("live").className = "live on"; $("live").textContent = "live"; render(JSON.parse(message.data)); });
  source.onerror = () => { $("live").className = "live"; $("live").textContent = "reconnecting…"; };
  return source;
}

// -- the runs list -------------------------------------------------------------------------------------
function renderRuns(data) {
  const body = $("runs").querySelector("tbody");
  body.replaceChildren();
  for (const job of data.jobs) {
    for (const run of job.runs) {
      const row = el("tr", { "data-run": run.runId, class: `run ${run.state}` },
        el("td", {}, run.jobId),
        el("td", {}, el("a", { href: `/runs/${encodeURIComponent(run.runId)}` }, run.runId)),
        el("td", {}, el("span", { class: `state ${run.state}` }, run.state)),
        el("td", {}, `${run.progress}% (${run.completedChunks}/${run.totalChunks})`),
        el("td", {}, fps(run.fps)), el("td", {}, eta(run.etaSeconds)), el("td", {}, cost(run.costUsd)),
        el("td", {}, age(run.createdAt)), el("td", {}, run.backend));
      row.addEventListener("click", () => { location.href = `/runs/${encodeURIComponent(run.runId)}`; });
      body.append(row);
    }
  }
  $("no-runs").hidden = data.jobs.length > 0;
}

// -- a run's page --------------------------------------------------------------------------------------
let current = null;

function chunkCell(chunk) {
  let cell = document.querySelector(`#grid [data-chunk="${chunk.id}"]`);
  if (!cell) {
    cell = el("div", { "data-chunk": chunk.id }, el("div", { class: "id" }), el("div", { class: "meta" }));
    $("grid").append(cell);
  }
  cell.className = `chunk ${chunk.state}`;
  cell.dataset.state = chunk.state;
  cell.querySelector(".id").textContent = `#${chunk.id} ${chunk.state}`;
  const took = chunk.durationMs ? ` · ${(chunk.durationMs / 1000).toFixed(1)} s` : "";
  cell.querySelector(".meta").textContent = `${chunk.attempts} attempt(s)${took}${chunk.worker ? " · " + chunk.worker : ""}`;
  if (chunk.thumbnail && !cell.querySelector("img")) cell.append(el("img", { src: chunk.thumbnail, alt: `chunk ${chunk.id}` }));
}

function renderErrors(run) {
  const failing = run.chunks.filter((c) => c.error || c.logTail.length);
  const box = $("errors");
  box.replaceChildren();
  if (run.error) box.append(el("div", { class: "err" }, el("b", {}, "run: "), run.error));
  for (const chunk of failing) {
    box.append(el("div", { class: "err", "data-error-chunk": chunk.id }, el("b", {}, `chunk ${chunk.id}: `), chunk.error || "",
      el("pre", {}, chunk.logTail.join("\n"))));
  }
  if (!box.children.length) box.append(el("p", { class: "quiet" }, "None."));
}

function renderRun(run) {
  if (run.error && !run.runId) { $("run-job").textContent = run.error; return; }
  current = run;
  document.title = `${run.jobId} · ${run.state} · helios`;
  $("run-job").textContent = run.jobId;
  $("run-id").textContent = run.runId;
  $("run-state").textContent = run.state;
  $("run-state").className = `state ${run.state}`;
  $("run-bar").style.width = `${run.progress}%`;
  $("run-progress").textContent = `${run.progress}% · ${run.doneFrames}/${run.totalFrames} frames · ${run.completedChunks}/${run.totalChunks} chunks`;
  $("run-fps").textContent = fps(run.fps);
  $("run-eta").textContent = eta(run.etaSeconds);
  $("run-cost").textContent = cost(run.costUsd);
  const active = run.state === "pending" || run.state === "running" || run.state === "interrupted";
  $("cancel").disabled = !active || run.cancelRequested;
  $("cancel").textContent = run.cancelRequested && active ? "Cancel requested" : "Cancel run";
  $("run-error").hidden = true;
  for (const chunk of run.chunks) chunkCell(chunk);
  renderErrors(run);
  const video = $("preview");
  if (run.preview && video.getAttribute("src") !== run.preview) { video.src = run.preview; video.hidden = false; $("no-preview").hidden = true; }
}

async function cancelRun() {
  if (!current) return;
  $("cancel").disabled = true;
  const answer = await fetch(`/api/runs/${encodeURIComponent(current.runId)}/cancel`, {
    method: "POST", headers: { "X-Helios-Token": token }, credentials: "same-origin",
  });
  if (!answer.ok) {
    $("run-error").textContent = (await answer.json()).error;
    $("run-error").hidden = false;
    $("cancel").disabled = false;
  }
}

const match = location.pathname.match(/^\/runs\/([^/]+)$/);
if (match) {
  $("run-view").hidden = false;
  $("cancel").addEventListener("click", cancelRun);
  listen(`/api/events?run=${match[1]}`, "run", renderRun);
} else {
  $("runs-view").hidden = false;
  listen("/api/events", "jobs", renderRuns);
}
