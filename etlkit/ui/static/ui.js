// etlkit UI: live updates without reloads. Polls only what changed since a cursor:
// the pipelines page asks for the store's fingerprint and refetches its table when it moved;
// a run page asks for the node attempts that started or ended since its cursor.
"use strict";

const POLL_MS = 1000;

async function getJson(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(url + ": " + response.status);
  return response.json();
}

async function getText(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(url + ": " + response.status);
  return response.text();
}

function watchPipelines(box) {
  let fingerprint = box.dataset.fingerprint;
  async function tick() {
    try {
      const pulse = await getJson(box.dataset.pulse);
      if (pulse.fingerprint !== fingerprint) {
        box.innerHTML = await getText(box.dataset.refresh);
        fingerprint = pulse.fingerprint;
      }
    } catch (error) {
      console.warn(error);
    }
    setTimeout(tick, POLL_MS * 2);
  }
  setTimeout(tick, POLL_MS * 2);
}

function setState(element, state) {
  element.className = element.className.replace(/\bs-[a-z]+/g, "").trim() + " s-" + state;
  element.textContent = state;
}

const FIELDS = ["state", "attempt", "rows_in", "rows_out", "invalid_rows", "bytes_staged", "error"];

function newRow(node) {
  // a node the page did not list yet: the same cells as the server renders
  const tr = document.createElement("tr");
  tr.id = "node-" + node.node;
  tr.dataset.node = node.node;
  for (const value of [node.node, node.kind]) {
    const td = document.createElement("td");
    td.textContent = value;
    tr.appendChild(td);
  }
  for (const key of FIELDS) {
    const td = document.createElement("td");
    if (key === "state") {
      const span = document.createElement("span");
      span.className = "state";
      span.dataset.field = "state";
      td.appendChild(span);
    } else {
      td.dataset.field = key;
      if (key === "error") td.className = "error";
    }
    tr.appendChild(td);
  }
  document.getElementById("node-rows").appendChild(tr);
  return tr;
}

function updateNode(node) {
  const row = document.getElementById("node-" + node.node) || newRow(node);
  for (const cell of row.querySelectorAll("[data-field]")) {
    const key = cell.dataset.field;
    if (key === "state") setState(cell, node.state);
    else if (key === "error") cell.textContent = node.error || "";
    else cell.textContent = Number(node[key]).toLocaleString("en-US");
  }
  for (const label of document.querySelectorAll("#dag text.edge-rows")) {
    if (label.dataset.from === node.node) label.textContent = Number(node.rows_out).toLocaleString("en-US");
  }
  for (const group of document.querySelectorAll("#dag g.node")) {
    if (group.dataset.node === node.node) {
      group.querySelector("rect").setAttribute("fill", node.colour);
      group.querySelector("title").textContent = node.node + ": " + node.state;
    }
  }
}

async function refreshPieces() {
  const html = await getText(window.location.pathname);
  const doc = new DOMParser().parseFromString(html, "text/html");
  for (const id of ["staged", "logs"]) {
    const fresh = doc.getElementById(id);
    const old = document.getElementById(id);
    if (fresh && old) old.replaceWith(fresh);
  }
}

function watchRun(box) {
  let cursor = box.dataset.cursor;
  const gantt = document.getElementById("gantt");
  async function tick() {
    let finished = false;
    try {
      const changes = await getJson(box.dataset.changes + "?since=" + encodeURIComponent(cursor));
      cursor = changes.cursor;
      changes.nodes.forEach(updateNode);
      setState(document.getElementById("run-state"), changes.run.state);
      document.getElementById("run-attempt").textContent = changes.run.attempt;
      const error = document.getElementById("run-error");
      error.textContent = changes.run.error || "";
      error.hidden = !changes.run.error;
      if (changes.nodes.length || changes.running) gantt.innerHTML = await getText(gantt.dataset.src);
      if (changes.run.finished_at) {
        document.getElementById("run-finished").textContent =
          changes.run.finished_at.slice(0, 19).replace("T", " ");
      }
      finished = changes.run.finished;
      if (finished) await refreshPieces();
    } catch (error) {
      console.warn(error);
    }
    if (!finished) setTimeout(tick, POLL_MS);
  }
  setTimeout(tick, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const pipelines = document.getElementById("pipelines");
  if (pipelines) watchPipelines(pipelines);
  const run = document.getElementById("run");
  if (run && run.dataset.finished === "no") watchRun(run);
});
