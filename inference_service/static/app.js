// The Test page: send an image to /predict, draw what comes back. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const PALETTE = ["#ff3838", "#2f6fed", "#18a058", "#ff9d1a", "#a347ff", "#00b3c4", "#e0457b", "#7a8c00"];
const state = { blob: null, filename: "image.jpg", image: null, info: null };

function endpoint() {
  return `${location.origin}/predict`;
}

function fields() {
  const out = { conf: $("conf").value, iou: $("iou").value };
  if ($("imgsz").value) out.imgsz = $("imgsz").value;
  return out;
}

function renderSnippets() {
  const f = fields();
  const key = state.info && state.info.authRequired ? "$API_KEY" : "";
  const auth = key ? ` \\\n  -H "Authorization: Bearer ${key}"` : "";
  const formArgs = Object.entries(f).map(([k, v]) => ` \\\n  -F ${k}=${v}`).join("");
  $("curl").textContent = `curl -X POST "${endpoint()}"${auth} \\\n  -F file=@${state.filename}${formArgs}`;
  const data = Object.entries(f).map(([k, v]) => `"${k}": ${v}`).join(", ");
  const headers = key ? `\n    headers={"Authorization": f"Bearer {os.environ['API_KEY']}"},` : "";
  const imports = key ? "import os\n\n" : "";
  $("python").textContent = `${imports}import requests\n\nwith open("${state.filename}", "rb") as f:\n` +
    `    r = requests.post(\n        "${endpoint()}",${headers}\n        files={"file": f},\n        data={${data}},\n    )\n` +
    `r.raise_for_status()\nfor det in r.json()["images"][0]["results"]:\n    print(det["name"], det["confidence"], det["box"])`;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function draw(results) {
  const canvas = $("canvas");
  const img = state.image;
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const lw = Math.max(2, Math.round(Math.min(canvas.width, canvas.height) / 200));
  ctx.font = `${Math.max(12, lw * 6)}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  let boxes = 0;
  for (const r of results) {
    if (!r.box) continue;
    const color = PALETTE[r.class % PALETTE.length];
    const { x1, y1, x2, y2 } = r.box;
    ctx.lineWidth = lw;
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${r.name} ${r.confidence.toFixed(2)}`;
    const w = ctx.measureText(label).width + 2 * lw;
    const h = Math.max(12, lw * 6) + lw;
    const ty = y1 - h >= 0 ? y1 - h : y1;
    ctx.fillStyle = color;
    ctx.fillRect(x1, ty, w, h);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + lw, ty + lw / 2);
    boxes += 1;
  }
  canvas.dataset.boxes = String(boxes);
}

async function predict() {
  if (!state.blob) return;
  renderSnippets();
  const form = new FormData();
  form.append("file", state.blob, state.filename);
  for (const [k, v] of Object.entries(fields())) form.append(k, v);
  const headers = {};
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  setStatus("Running…");
  const started = performance.now();
  let body;
  let response;
  try {
    response = await fetch(endpoint(), { method: "POST", body: form, headers });
    body = await response.json();
  } catch (err) {
    setStatus(`Request failed: ${err}`, true);
    return;
  }
  const rtt = performance.now() - started;
  $("json").textContent = JSON.stringify(body, null, 2);
  if (!response.ok) {
    setStatus(`${response.status}: ${body.error || "error"}`, true);
    return;
  }
  const image = body.images[0];
  draw(image.results);
  const n = image.results.length;
  setStatus(`${n} detection${n === 1 ? "" : "s"} in ${state.filename}`);
  const fmt = (ms) => `${ms.toFixed(1)} ms`;
  $("t-pre").textContent = fmt(image.speed.preprocess);
  $("t-inf").textContent = fmt(image.speed.inference);
  $("t-post").textContent = fmt(image.speed.postprocess);
  $("t-call").textContent = fmt(body.metadata.functionTimeCall);
  $("t-rtt").textContent = fmt(rtt);
  $("timings").hidden = false;
}

function loadImage(blob, filename) {
  state.blob = blob;
  state.filename = filename;
  const img = new Image();
  img.onload = () => {
    state.image = img;
    $("run").disabled = false;
    predict();
  };
  img.onerror = () => setStatus(`${filename} is not an image this browser can show`, true);
  img.src = URL.createObjectURL(blob);
}

async function pickSample(name, button) {
  document.querySelectorAll(".samples button").forEach((b) => b.classList.remove("active"));
  button.classList.add("active");
  const res = await fetch(`/samples/${encodeURIComponent(name)}`);
  loadImage(await res.blob(), name);
}

async function init() {
  const key = localStorage.getItem("apiKey");
  if (key) $("api-key").value = key;
  $("api-key").addEventListener("change", () => localStorage.setItem("apiKey", $("api-key").value.trim()));
  for (const id of ["conf", "iou"]) {
    $(id).addEventListener("input", () => { $(`${id}-out`).textContent = Number($(id).value).toFixed(2); });
    $(id).addEventListener("change", predict);
  }
  $("imgsz").addEventListener("change", predict);
  $("run").addEventListener("click", predict);
  $("upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) loadImage(file, file.name);
  });
  document.querySelectorAll("[data-copy]").forEach((btn) => btn.addEventListener("click", async () => {
    await navigator.clipboard.writeText($(btn.dataset.copy).textContent);
    btn.textContent = "Copied";
    setTimeout(() => { btn.textContent = "Copy"; }, 1500);
  }));
  const info = await (await fetch("/info")).json();
  state.info = info;
  $("model-name").textContent = info.model ? `· ${info.model}` : "";
  $("model-meta").textContent = info.task ? `${info.task} model, imgsz ${info.imgsz}, server ${info.version}` : "model loading…";
  $("key-row").hidden = !info.authRequired;
  if (info.imgsz) $("imgsz").placeholder = `${info.imgsz} (model default)`;
  for (const name of info.samples) {
    const button = document.createElement("button");
    button.type = "button";
    button.title = name;
    button.dataset.sample = name;
    const img = document.createElement("img");
    img.src = `/samples/${encodeURIComponent(name)}`;
    img.alt = name;
    button.appendChild(img);
    button.addEventListener("click", () => pickSample(name, button));
    $("samples").appendChild(button);
  }
  renderSnippets();
}

init();
