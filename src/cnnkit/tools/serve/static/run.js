// A run's page: its curves redrawn from metrics.jsonl while it trains, predict, its report and config.
"use strict";

const RUN = runNameFromPath();
const API = `/api/runs/${encodeURIComponent(RUN)}`;
let shown = {rows: -1, status: null, report: null};
let previewImage = null;

function series(rows, keys) {
  return keys.map(k => ({name: k, points: rows.filter(r => k in r).map(r => [r.epoch, r[k]])}));
}

function drawCurves(rows) {
  const keys = [...new Set(rows.flatMap(r => Object.keys(r)))]
    .filter(k => typeof rows.find(r => k in r)[k] === "number" && k !== "epoch" && !k.endsWith("_time_s"));
  const loss = keys.filter(k => k.includes("loss"));
  const lr = keys.filter(k => k === "lr" || k.startsWith("lr_"));
  const metric = keys.filter(k => !loss.includes(k) && !lr.includes(k));
  drawChart(document.getElementById("chart-loss"), "loss", series(rows, loss));
  drawChart(document.getElementById("chart-metric"), "metrics", series(rows, metric));
  drawChart(document.getElementById("chart-lr"), "learning rate", series(rows, lr));
}

function showFinal(final) {
  const box = document.getElementById("final");
  if (!final) { box.replaceChildren(el("p", {class: "muted", text: "No final.json yet: the run has not finished."})); return; }
  const rows = Object.entries(final).filter(([, v]) => ["number", "string", "boolean"].includes(typeof v));
  rows.sort((a, b) => b[0].startsWith("val_") - a[0].startsWith("val_"));  // the held-out figures first
  box.replaceChildren(el("dl", {class: "kv"}, ...rows.map(([k, v]) =>
    el("div", {class: k.startsWith("val_") ? "val" : null}, el("dt", {text: k}), el("dd", {class: "num", text: fmt(v)})))));
}

function showReport(run) {
  const frame = document.getElementById("report-frame");
  const line = document.getElementById("report-line");
  const url = `/runs/${encodeURIComponent(RUN)}/report.html`;
  if (run.report) {
    line.replaceChildren("report.html: ", el("a", {href: url, target: "_blank", rel: "noopener", text: "open in a new tab"}));
    frame.replaceChildren(el("iframe", {class: "report", src: `${url}?t=${Date.now()}`, title: "run report",
                                        sandbox: "allow-scripts allow-popups"}));
  } else {
    line.textContent = "No report.html yet.";
    frame.replaceChildren();
  }
  const button = document.getElementById("build-report");
  button.hidden = false;
  button.textContent = run.report ? "Rebuild report" : "Build report";
}

async function buildReport() {
  const button = document.getElementById("build-report"), status = document.getElementById("report-status");
  button.disabled = true;
  status.textContent = "building…";
  try {
    await api(`${API}/report`, {method: "POST"});
    status.textContent = "";
    shown.report = null;
    await refresh();
  } catch (e) {
    status.replaceChildren(el("span", {class: "error", text: e.message}));
  } finally {
    button.disabled = false;
  }
}

function setupPredict(run) {
  const card = document.getElementById("predict-card");
  if (!run.input) return;
  card.hidden = false;
  const button = document.getElementById("predict-button");
  if (run.input === "image") {
    document.getElementById("image-input").hidden = false;
    document.getElementById("predict-limit").textContent = `an image of at most ${run.max_upload_bytes / 2 ** 20} MiB`;
    document.getElementById("predict-file").addEventListener("change", e => {
      const file = e.target.files[0];
      button.disabled = !file;
      document.getElementById("prediction").replaceChildren();
      if (file) showPreview(file);
    });
  } else {
    document.getElementById("text-input").hidden = false;
    document.getElementById("predict-limit").textContent = `at most ${run.max_text_chars} characters`;
    const text = document.getElementById("predict-text");
    text.maxLength = run.max_text_chars;
    text.addEventListener("input", () => { button.disabled = !text.value.trim(); });
  }
  button.addEventListener("click", predict);
}

function showPreview(file) {
  const img = new Image();
  img.onload = () => { previewImage = img; drawPreview([]); URL.revokeObjectURL(img.src); };
  img.onerror = () => { previewImage = null; drawPreview([]); };
  img.src = URL.createObjectURL(file);
}

/** The uploaded image, at most 320 px wide, with detection boxes (in the image's pixels) drawn on it. */
function drawPreview(detections) {
  const canvas = document.getElementById("preview");
  canvas.hidden = !previewImage;
  if (!previewImage) return;
  const scale = Math.min(320 / previewImage.naturalWidth, 320 / previewImage.naturalHeight, 8);
  canvas.width = Math.round(previewImage.naturalWidth * scale);
  canvas.height = Math.round(previewImage.naturalHeight * scale);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = scale < 1;
  ctx.drawImage(previewImage, 0, 0, canvas.width, canvas.height);
  ctx.lineWidth = 2; ctx.font = "12px system-ui, sans-serif";
  detections.forEach((d, i) => {
    const [x0, y0, x1, y1] = d.box.map(v => v * scale);
    ctx.strokeStyle = ctx.fillStyle = COLORS[i % COLORS.length];
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.fillText(`${d.class} ${fmt(d.score, 2)}`, x0 + 2, Math.max(12, y0 - 3));
  });
}

function topTable(top) {
  return el("table", {class: "data probabilities"}, el("tbody", {}, ...top.map(t => el("tr", {},
    el("td", {class: "class-name", text: t.class}),
    el("td", {class: "bar-cell"}, el("div", {class: "bar", style: `width: ${(100 * t.probability).toFixed(1)}%`})),
    el("td", {class: "num", text: `${(100 * t.probability).toFixed(2)}%`})))));
}

/** The predicted mask over the image (grey, each foreground class tinted) and a legend of the tints. */
function maskFigure(src, legend) {
  const isColour = c => typeof c === "string" && /^#[0-9a-f]{6}$/i.test(c);  // only a colour reaches the CSS
  return el("figure", {class: "mask"},
    el("img", {id: "mask-overlay", src, alt: "predicted mask over the image"}),
    el("figcaption", {}, "Predicted mask (background left grey): ",
      el("ul", {class: "legend", id: "mask-legend"}, ...legend.filter(item => isColour(item.color)).map(item =>
        el("li", {}, el("span", {class: "swatch", style: `background-color: ${item.color}`}),
           el("span", {class: "class-name", text: item.class}))))));
}

function showPrediction(r) {
  const box = document.getElementById("prediction");
  if (r.top) {
    const best = r.top[0];
    box.replaceChildren(
      el("p", {class: "top"}, "Top class: ", el("strong", {class: "top-class", text: best.class}),
         ` (${(100 * best.probability).toFixed(2)}%)`),
      topTable(r.top),
      ...(r.gradcam ? [el("figure", {class: "gradcam"}, el("img", {id: "gradcam", src: r.gradcam, alt: "Grad-CAM"}),
                         el("figcaption", {text: `Grad-CAM: where the network looked for "${best.class}" (red: most)`}))]
                    : r.gradcam_note ? [el("p", {class: "muted", text: r.gradcam_note})] : []));
  } else if (r.detections) {
    drawPreview(r.detections);
    const head = r.detections.length
      ? [`${r.detections.length} object(s), best: `, el("strong", {class: "top-class", text: r.detections[0].class})]
      : ["nothing found"];
    box.replaceChildren(el("p", {class: "top"}, ...head),
      el("table", {class: "data"}, el("tbody", {}, ...r.detections.map(d => el("tr", {},
        el("td", {class: "class-name", text: d.class}), el("td", {class: "num", text: fmt(d.score, 3)}),
        el("td", {class: "num", text: d.box.map(v => fmt(v, 0)).join(", ")}))))));
  } else if (r.shares) {
    const entries = Object.entries(r.shares).sort((a, b) => b[1] - a[1]);
    box.replaceChildren(el("p", {class: "top"}, "Largest class: ", el("strong", {class: "top-class", text: entries[0][0]})),
      topTable(entries.map(([c, v]) => ({class: c, probability: v}))),
      el("p", {class: "muted", text: `share of the ${r.size[0]}×${r.size[1]} mask's pixels per class`}),
      ...(typeof r.mask_overlay === "string" && r.mask_overlay.startsWith("data:image/png;base64,")
        ? [maskFigure(r.mask_overlay, r.mask_legend || [])] : []));
  } else if ("psnr" in r) {
    box.replaceChildren(el("p", {class: "top", text: `reconstruction: mse ${fmt(r.mse, 5)}, psnr ${fmt(r.psnr, 2)} dB`}));
  } else {
    box.replaceChildren(el("pre", {text: JSON.stringify(r, null, 2)}));
  }
}

async function predict() {
  const button = document.getElementById("predict-button"), box = document.getElementById("prediction");
  const form = new FormData();
  const file = document.getElementById("predict-file").files[0];
  if (!document.getElementById("image-input").hidden && file) form.append("file", file);
  else form.append("text", document.getElementById("predict-text").value);
  button.disabled = true;
  box.replaceChildren(el("p", {class: "muted", text: "predicting…"}));
  try {
    showPrediction(await api(`${API}/predict?top_k=5`, {method: "POST", body: form}));
  } catch (e) {
    box.replaceChildren(el("p", {class: "error", text: e.message}));
  } finally {
    button.disabled = false;
  }
}

async function refresh() {
  const error = document.getElementById("load-error");
  try {
    const run = await api(API);
    document.getElementById("run-line").replaceChildren(statusBadge(run.status),
      ` ${run.task} · ${run.model} · epoch ${run.epochs_done}${run.epochs_planned ? " / " + run.epochs_planned : ""}`);
    if (shown.status === null) {
      document.getElementById("config").textContent = run.config;
      setupPredict(run);
    }
    if (run.status !== shown.status || run.epochs_done !== shown.rows) {
      drawCurves((await api(`${API}/metrics`)).rows);
      showFinal(run.final);
    }
    if (run.report !== shown.report) showReport(run);
    shown = {rows: run.epochs_done, status: run.status, report: run.report};
    error.hidden = true;
  } catch (e) {
    error.textContent = `Cannot read the run: ${e.message}`;
    error.hidden = false;
  }
}

document.getElementById("run-name").textContent = RUN;
document.title = `${RUN} · cnnkit`;
document.getElementById("build-report").addEventListener("click", buildReport);
window.addEventListener("resize", () => { shown.rows = -1; refresh(); });
refresh();
setInterval(refresh, 2000);
