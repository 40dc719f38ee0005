// The runs page: one row per run folder, polled every 2 s so that a training run moves.
"use strict";

function metricsCell(run) {
  const finished = Object.keys(run.final_metrics || {}).length > 0;
  const shown = finished ? run.final_metrics : run.latest_metrics || {};
  const cell = el("td", {class: "metrics"});
  for (const [k, v] of Object.entries(shown)) {
    cell.append(el("span", {}, `${k.replace(/^val_/, "")} `, el("b", {class: "num", text: fmt(v)})));
  }
  if (!finished && Object.keys(shown).length) cell.append(el("span", {class: "muted", text: "(latest epoch)"}));
  return cell;
}

function runRow(run) {
  const link = el("a", {href: `/runs/${encodeURIComponent(run.name)}`, text: run.name});
  if (run.error) {
    return el("tr", {"data-run": run.name}, el("td", {}, link), el("td", {}, statusBadge(run.status)),
              el("td", {colspan: 4, class: "error", text: run.error}));
  }
  const epochs = run.status === "finished" || !run.epochs_planned
    ? String(run.epochs_done) : `${run.epochs_done} / ${run.epochs_planned}`;
  return el("tr", {"data-run": run.name},
            el("td", {}, link), el("td", {}, statusBadge(run.status)), el("td", {text: run.task}),
            el("td", {text: run.model}), el("td", {class: "num", text: epochs}), metricsCell(run));
}

async function refresh() {
  const error = document.getElementById("load-error");
  try {
    const data = await api("/api/runs");
    document.getElementById("runs-dir").textContent = data.runs_dir;
    document.querySelector("#runs tbody").replaceChildren(...data.runs.map(runRow));
    document.getElementById("no-runs").hidden = data.runs.length > 0;
    error.hidden = true;
  } catch (e) {
    error.textContent = `Cannot read the runs: ${e.message}`;
    error.hidden = false;
  }
}

refresh();
setInterval(refresh, 2000);
