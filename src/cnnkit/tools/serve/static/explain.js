// The glass box: the course's convolution and pooling examples, one window position per step.
"use strict";

const OP_NAMES = {conv: "convolution", maxpool: "max pooling", avgpool: "average pooling", l2pool: "L2 pooling"};
let ex = null, step = 0, timer = null;

/** Cell text: -inf padding (null in JSON) as −∞, other numbers with up to 3 decimals. */
function cell(v) { return v === null ? "−∞" : fmt(v, 3); }

function matrix(id, rows, classOf) {
  document.getElementById(id).replaceChildren(...rows.map((row, i) =>
    el("tr", {}, ...row.map((v, j) => el("td", {class: classOf ? classOf(i, j) : null, text: cell(v)})))));
}

function render() {
  const s = ex.steps[step];
  const [r0, c0] = s.position, [oi, oj] = s.output_cell;
  const kh = s.window.length, kw = s.window[0].length;
  const grid = ex.padded_input || ex.input;
  const maxAt = ex.op === "maxpool" ? s.window.flat().indexOf(Math.max(...s.window.flat())) : -1;
  matrix("input-matrix", grid, (i, j) => {
    const inside = i >= r0 && i < r0 + kh && j >= c0 && j < c0 + kw;
    if (!inside) return null;
    return (i - r0) * kw + (j - c0) === maxAt ? "in-window win-max" : "in-window";
  });
  const outW = ex.output[0].length;
  matrix("output-matrix", ex.output, (i, j) => {
    const k = i * outW + j;
    return k === step ? "current" : k < step ? "done" : "pending";
  });
  if (ex.op === "conv") {
    matrix("kernel-matrix", ex.kernel);
    matrix("products-matrix", s.window.map((row, i) => row.map((v, j) => v * ex.kernel[i][j])));
  }
  document.getElementById("step-number").textContent = `${step + 1} of ${ex.steps.length}`;
  document.getElementById("step-position").textContent = `(${oi}, ${oj})`;
  const value = document.getElementById("step-value");
  value.textContent = fmt(s.value, 4);
  value.dataset.row = oi;
  value.dataset.col = oj;
  document.getElementById("step-expression").textContent = s.expression;
  document.getElementById("step-prev").disabled = step === 0;
  document.getElementById("step-next").disabled = step === ex.steps.length - 1;
}

async function load(op) {
  const error = document.getElementById("load-error");
  try {
    ex = await api(`/api/explain/${encodeURIComponent(op)}`);
    error.hidden = true;
  } catch (e) {
    error.textContent = `Cannot load the example: ${e.message}`;
    error.hidden = false;
    return;
  }
  step = 0;
  const conv = ex.op === "conv";
  const k = conv ? `${ex.kernel.length}×${ex.kernel[0].length}` : `${ex.size}×${ex.size}`;
  document.getElementById("kernel-figure").hidden = !conv;
  document.getElementById("products-figure").hidden = !conv;
  const outlined = ex.op === "maxpool" ? ", its max outlined" : "";
  document.getElementById("input-caption").textContent =
    `input ${ex.input.length}×${ex.input[0].length} (the ${k} window highlighted${outlined})`;
  document.getElementById("kernel-caption").textContent = `kernel ${k}`;
  document.getElementById("products-caption").textContent = "window × kernel (their sum is the output)";
  document.getElementById("output-caption").textContent =
    `${OP_NAMES[ex.op]} output ${ex.output.length}×${ex.output[0].length}, stride ${ex.stride}`;
  render();
}

function move(delta) {
  if (!ex) return;
  step = Math.min(ex.steps.length - 1, Math.max(0, step + delta));
  render();
}

function togglePlay() {
  const button = document.getElementById("step-play");
  if (timer) { clearInterval(timer); timer = null; button.textContent = "Play"; return; }
  if (ex && step === ex.steps.length - 1) { step = 0; render(); }
  button.textContent = "Pause";
  timer = setInterval(() => {
    if (!ex || step >= ex.steps.length - 1) { togglePlay(); return; }
    move(1);
  }, 900);
}

document.getElementById("step-next").addEventListener("click", () => move(1));
document.getElementById("step-prev").addEventListener("click", () => move(-1));
document.getElementById("step-play").addEventListener("click", togglePlay);
document.getElementById("op").addEventListener("change", e => load(e.target.value));
document.addEventListener("keydown", e => {
  if (e.key === "ArrowRight") move(1);
  if (e.key === "ArrowLeft") move(-1);
});
load(document.getElementById("op").value);
