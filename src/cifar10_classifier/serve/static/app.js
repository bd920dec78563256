// The page's behaviour: pick an image (drop, browse or paste), POST it to /predict, draw the answer; "Show why"
// POSTs the same file to /explain and lays its heat map over the preview.
// Everything the server or the user supplies is put on the page with textContent, never parsed as HTML:
// a file called "<img onerror=...>.png" is shown as text.
"use strict";

const TOP_K = 5;
const $ = (id) => document.getElementById(id);

function show(element, visible) {
  element.hidden = !visible;
}

function percent(probability) {
  return `${(probability * 100).toFixed(1)}%`;
}

function showError(message) {
  $("error-banner").textContent = message;
  show($("error-banner"), true);
}

function clearError() {
  show($("error-banner"), false);
  $("error-banner").textContent = "";
}

function showRaw(payload) {
  $("raw-json").textContent = JSON.stringify(payload, null, 2);
  show($("raw"), true);
}

function drawBars(topK) {
  const list = $("bars");
  list.replaceChildren();
  topK.forEach((entry, rank) => {
    const item = document.createElement("li");
    item.className = rank === 0 ? "bar bar-top" : "bar";
    const name = document.createElement("span");
    name.className = "bar-name";
    name.textContent = entry.class;
    const track = document.createElement("span");
    track.className = "bar-track";
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = `${Math.max(0.5, entry.probability * 100)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = percent(entry.probability);
    item.append(name, track, value);
    list.append(item);
  });
}

function drawPrediction(payload) {
  // Only an explicit false: a model (or server) without an off-distribution score sends no field at all.
  show($("ood-banner"), payload.in_distribution === false);
  $("answer-class").textContent = payload.class;
  $("answer-probability").textContent = `(${percent(payload.probability)})`;
  drawBars(payload.top_k);
  const t = payload.timing_ms;
  $("timing").textContent =
    `decode ${t.decode.toFixed(1)} ms · inference ${t.inference.toFixed(1)} ms · total ${t.total.toFixed(1)} ms` +
    ` · ${payload.model.name} ${payload.model.version}`;
  show($("result"), true);
  show($("hint"), false);
}

let previewUrl = null;
let currentFile = null;
// Bumped for every new image: an explanation that arrives after the user moved on is dropped, not drawn.
let explainGeneration = 0;

// Red (a little) to yellow (the most), as the server's PNG overlay; transparent where hiding changed nothing.
function drawHeatmap(heatmap) {
  const canvas = $("explain-canvas");
  const rows = heatmap.length;
  const columns = rows ? heatmap[0].length : 0;
  canvas.width = columns;
  canvas.height = rows;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(columns, rows);
  heatmap.forEach((row, r) =>
    row.forEach((value, c) => {
      const v = Math.min(1, Math.max(0, Number(value) || 0));
      const at = (r * columns + c) * 4;
      pixels.data.set([255, Math.round(255 * v), 0, Math.round(255 * 0.6 * v)], at);
    }),
  );
  context.putImageData(pixels, 0, 0);
}

function hideExplanation() {
  show($("explain-canvas"), false);
  show($("explain-hint"), false);
}

async function explain() {
  const generation = explainGeneration;
  const file = currentFile;
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name || "pasted-image");
  $("explain-toggle").disabled = true;
  try {
    const response = await fetch(`/explain?top_k=${TOP_K}`, { method: "POST", body: form });
    const payload = await response.json().catch(() => ({}));
    if (generation !== explainGeneration || !$("explain-toggle").checked) return;
    if (!response.ok) {
      const error = payload.error || {};
      showError(`${error.message || "the explanation failed"} (${error.code || response.status})`);
      return;
    }
    drawHeatmap(payload.heatmap);
    show($("explain-canvas"), true);
    show($("explain-hint"), true);
  } catch (error) {
    if (generation === explainGeneration) showError(`Could not reach the server: ${error.message}`);
  } finally {
    if (generation === explainGeneration) $("explain-toggle").disabled = false;
  }
}

function toggleExplanation() {
  if ($("explain-toggle").checked) explain();
  else hideExplanation();
}

function showPreview(file) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  const preview = $("preview");
  preview.src = previewUrl;
  show(preview, true);
  $("dropzone").classList.add("has-image");
  $("file-name").textContent = `${file.name || "pasted image"} · ${(file.size / 1024).toFixed(1)} KB`;
  show($("file-name"), true);
}

async function classify(file) {
  clearError();
  show($("result"), false);
  explainGeneration += 1;
  currentFile = file;
  hideExplanation();
  $("explain-toggle").disabled = false;
  showPreview(file);
  $("dropzone").classList.add("busy");
  const form = new FormData();
  form.append("file", file, file.name || "pasted-image");
  try {
    const response = await fetch(`/predict?top_k=${TOP_K}`, { method: "POST", body: form });
    let payload;
    try {
      payload = await response.json();
    } catch {
      throw new Error(`the server answered ${response.status} without JSON`);
    }
    showRaw(payload);
    if (!response.ok) {
      const error = payload.error || {};
      showError(`${error.message || "the request failed"} (${error.code || response.status})`);
      return;
    }
    drawPrediction(payload);
    if ($("explain-toggle").checked) explain(); // the toggle stays on from one image to the next
  } catch (error) {
    showError(`Could not reach the server: ${error.message}`);
  } finally {
    $("dropzone").classList.remove("busy");
  }
}

function firstImage(items) {
  for (const item of items || []) {
    const file = item instanceof File ? item : item.kind === "file" ? item.getAsFile() : null;
    if (file) return file;
  }
  return null;
}

function wireInputs() {
  const dropzone = $("dropzone");
  const input = $("file-input");
  // A file the browser cannot show (not an image, or a format it lacks) gets no broken-image icon.
  $("preview").addEventListener("error", () => {
    show($("preview"), false);
    dropzone.classList.remove("has-image");
  });
  $("explain-toggle").addEventListener("change", toggleExplanation);
  input.addEventListener("change", () => {
    if (input.files.length) classify(input.files[0]);
    input.value = ""; // choosing the same file again still triggers a change
  });
  dropzone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  ["dragenter", "dragover"].forEach((name) =>
    dropzone.addEventListener(name, (event) => {
      event.preventDefault();
      dropzone.classList.add("dragging");
    }),
  );
  ["dragleave", "drop"].forEach((name) =>
    dropzone.addEventListener(name, () => dropzone.classList.remove("dragging")),
  );
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = firstImage(event.dataTransfer.files);
    if (file) classify(file);
    else showError("Drop an image file.");
  });
  // A drop outside the zone would otherwise navigate away to the image.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  document.addEventListener("paste", (event) => {
    const file = firstImage(event.clipboardData && event.clipboardData.items);
    if (file) classify(file);
  });
}

async function checkModel() {
  const banner = $("status-banner");
  try {
    const response = await fetch("/readyz");
    const payload = await response.json();
    if (response.ok) {
      $("model-info").textContent = `model ${payload.model.name} ${payload.model.version}`;
      show(banner, false);
      return;
    }
    const error = payload.error || {};
    $("model-info").textContent = "no model ready";
    banner.textContent = error.message || "the model is not ready";
    show(banner, true);
    if (error.code === "model_loading") setTimeout(checkModel, 1000);
  } catch (error) {
    banner.textContent = `Could not reach the server: ${error.message}`;
    show(banner, true);
  }
}

wireInputs();
checkModel();
