// The page's behaviour: pick an image (drop, browse or paste), POST it to /predict, draw the answer.
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
