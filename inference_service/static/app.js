// The Test page: send an image to the predict route, draw what comes back. Plain JS, no build step.
// Dedicated mode posts to /predict; shared mode (info.mode "shared") to /api/models/{owner}/{project}/{model}/predict
// with a tenant key. The canvas only ever shows the image of the current request: every new request or error
// first clears the previous boxes and timings.
"use strict";

const $ = (id) => document.getElementById(id);
const PALETTE = ["#ff3838", "#2f6fed", "#18a058", "#ff9d1a", "#a347ff", "#00b3c4", "#e0457b", "#7a8c00"];
const TARGET = ["owner", "project", "model"];
const EXAMPLE_FILE = "image.jpg";
// pick: bumped by each new image, so a slow fetch or decode of an older one is dropped; run: same for requests.
// facts: the model's task, imgsz, end2end (/info in dedicated mode, the tenant model's info route in shared mode).
// home: shared mode, where this service redirected the tenant (the key and owner in ``tenant``) to: the data
// region's service, { tenant, url, region }.
const state = {
  blob: null, filename: null, sample: null, image: null, info: null, facts: null, home: null, pick: 0, run: 0,
};

const isShared = () => state.info?.mode === "shared";
const isEndToEnd = () => state.facts?.end2end === true;
const authRequired = () => Boolean(state.info?.authRequired);
const apiKey = () => $("api-key").value.trim();
const missingTarget = () => (isShared() ? TARGET.filter((name) => !$(name).value.trim()) : []);
const tenant = () => `${apiKey()} ${$("owner").value.trim()}`;
const home = () => (state.home?.tenant === tenant() ? state.home : null); // another key or owner: ask here again

/** The predict URL, at the tenant's data region once redirected there; a shared-mode path segment not filled in
 * yet shows as OWNER, PROJECT or MODEL. */
function endpoint(path = state.info?.predictPath || "/predict") {
  return (home()?.url || location.origin) + path.replace(/\{(\w+)\}/g, (_, name) => {
    const value = $(name) ? $(name).value.trim() : "";
    return value ? encodeURIComponent(value) : name.toUpperCase();
  });
}

/** Form fields besides the file; no iou for an end-to-end model, which ignores it. */
function fields() {
  const out = { conf: $("conf").value };
  if (!isEndToEnd()) out.iou = $("iou").value;
  if ($("imgsz").value) out.imgsz = $("imgsz").value;
  return out;
}

/** A POSIX shell word in single quotes. */
const shellQuote = (text) => `'${text.replace(/'/g, `'\\''`)}'`;

/** curl's -F file=@NAME, with NAME in curl's own double quotes when it holds a character curl -F treats apart. */
function curlFileArg(name) {
  const inner = /[;,"\\]/.test(name) ? `"${name.replace(/["\\]/g, "\\$&")}"` : name;
  return shellQuote(`file=@${inner}`);
}

function renderSnippets() {
  const name = state.filename || EXAMPLE_FILE;
  const f = fields();
  const key = authRequired();
  const setKey = key ? `# once per shell: export API_KEY=<your ${isShared() ? "tenant " : ""}key>\n` : "";
  const auth = key ? ` \\\n  -H "Authorization: Bearer $API_KEY"` : "";
  const formArgs = Object.entries(f).map(([k, v]) => ` \\\n  -F ${k}=${v}`).join("");
  $("curl").textContent = `${setKey}curl -X POST "${endpoint()}"${auth} \\\n  -F ${curlFileArg(name)}${formArgs}`;
  const data = Object.entries(f).map(([k, v]) => `"${k}": ${v}`).join(", ");
  const headers = key ? `\n        headers={"Authorization": f"Bearer {os.environ['API_KEY']}"},` : "";
  const imports = key ? "import os\n\n" : "";
  $("python").textContent = `# needs requests: pip install requests\n${setKey}${imports}import requests\n\nwith open(${JSON.stringify(name)}, "rb") as f:\n` +
    `    r = requests.post(\n        "${endpoint()}",${headers}\n        files={"file": f},\n        data={${data}},\n    )\n` +
    `r.raise_for_status()\nfor det in r.json()["images"][0]["results"]:\n    print(det["name"], det["confidence"], det["box"])`;
  const download = $("download");
  download.hidden = !state.sample;
  if (state.sample) {
    download.href = `/samples/${encodeURIComponent(state.sample)}`;
    download.download = state.sample;
    download.textContent = `Download ${state.sample}`;
  }
}

/** ``fetch``, following a shared service's 307 to the tenant's data region. The browser follows it but drops the
 * key on the way to another origin, so the answer is that region's 401: resend there with the key, and send there
 * from now on (``state.home``, shown in the header and the snippets). A region that does not let this page's
 * origin call it (not one of its peers) fails the fetch: then say that, not just "failed to fetch". */
async function send(url, init) {
  let res;
  try {
    res = await fetch(url, init);
  } catch (err) {
    const probe = await fetch(url, { ...init, redirect: "manual" }).catch(() => null);
    if (probe?.type !== "opaqueredirect") throw err;
    throw new Error("this service sends the tenant to its data region's service, which does not accept calls from " +
      `this page (${location.origin} is not one of its peers): open the Test page on that region's host`);
  }
  const to = new URL(res.url);
  const route = to.pathname.indexOf("/api/models/");
  if (!res.redirected || res.status !== 401 || route < 0 || to.origin === new URL(url).origin) return res;
  const base = to.origin + to.pathname.slice(0, route);
  let region = to.host;
  try {
    region = (await (await fetch(`${base}/info`)).json()).region || region;
  } catch {
    // the host names it well enough
  }
  state.home = { tenant: tenant(), url: base, region };
  describe();
  return fetch(res.url, init);
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function highlight(sample) {
  document.querySelectorAll(".samples button").forEach((b) => b.classList.toggle("active", b.dataset.sample === sample));
}

/** Back to a blank canvas: no image, no boxes, no timings. */
function clearCanvas() {
  const canvas = $("canvas");
  canvas.width = 640;
  canvas.height = 480;
  canvas.dataset.boxes = "0";
  canvas.dataset.shown = "";
  canvas.dataset.labels = "[]";
  $("timings").hidden = true;
}

/** The current image alone: what a request in flight or a failed one shows, never the previous result. */
function showImage() {
  const canvas = $("canvas");
  const img = state.image;
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  canvas.getContext("2d").drawImage(img, 0, 0);
  canvas.dataset.boxes = "0";
  canvas.dataset.shown = state.filename;
  canvas.dataset.labels = "[]";
  $("timings").hidden = true;
}

const overlaps = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;

/** Where each label goes: above its box, else inside it, else the nearest free row down then up, so no label
 * covers another. The most confident are placed first and get the best spots. */
function placeLabels(ctx, dets, lw, h, width, height) {
  const placed = [];
  for (const det of [...dets].sort((a, b) => b.confidence - a.confidence)) {
    const w = Math.min(width, ctx.measureText(det.label).width + 2 * lw);
    const x = Math.max(0, Math.min(det.box.x1, width - w));
    const first = det.box.y1 - h >= 0 ? det.box.y1 - h : det.box.y1;
    const ys = [first];
    for (let y = first + h; y + h <= height; y += h) ys.push(y);
    for (let y = first - h; y >= 0; y -= h) ys.push(y);
    const spot = ys.map((y) => ({ x, y: Math.min(y, height - h), w, h })).find((r) => !placed.some((p) => overlaps(r, p)));
    det.rect = spot || { x, y: Math.min(first, height - h), w, h };
    placed.push(det.rect);
  }
}

function draw(results) {
  showImage();
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const lw = Math.max(2, Math.round(Math.min(canvas.width, canvas.height) / 200));
  const fontPx = Math.max(12, lw * 6);
  ctx.font = `${fontPx}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  // ascending confidence: the most confident box and label are drawn last, on top
  const dets = results.filter((r) => r.box).map((r) => ({ ...r, label: `${r.name} ${r.confidence.toFixed(2)}` }))
    .sort((a, b) => a.confidence - b.confidence);
  placeLabels(ctx, dets, lw, fontPx + lw, canvas.width, canvas.height);
  ctx.lineWidth = lw;
  for (const det of dets) {
    const { x1, y1, x2, y2 } = det.box;
    ctx.strokeStyle = PALETTE[det.class % PALETTE.length];
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  }
  for (const det of dets) {
    const { x, y, w, h } = det.rect;
    ctx.fillStyle = PALETTE[det.class % PALETTE.length];
    ctx.fillRect(x, y, w, h);
    ctx.fillStyle = "#fff";
    ctx.fillText(det.label, x + lw, y + lw / 2);
  }
  canvas.dataset.boxes = String(dets.length);
  canvas.dataset.labels = JSON.stringify(dets.map((d) => d.rect));
}

/** What is missing before a request can go out, as a prompt; null when nothing is. */
function missingInput() {
  const missing = missingTarget();
  if (authRequired() && !apiKey()) {
    $("api-key").focus();
    return `Enter your ${isShared() ? "tenant " : ""}API key above to run the model on ${state.filename}.`;
  }
  if (missing.length) {
    $(missing[0]).focus();
    return `Enter the ${missing.join(", ")} of the model to run on ${state.filename}.`;
  }
  return null;
}

async function predict() {
  renderSnippets();
  if (!state.image) return;
  const run = ++state.run;
  showImage();
  $("json").textContent = "";
  const prompt = missingInput();
  if (prompt) {
    setStatus(prompt);
    return;
  }
  const form = new FormData();
  form.append("file", state.blob, state.filename);
  for (const [k, v] of Object.entries(fields())) form.append(k, v);
  const headers = {};
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  setStatus("Running…");
  const started = performance.now();
  let body;
  let response;
  try {
    response = await send(endpoint(), { method: "POST", body: form, headers });
    body = await response.json();
  } catch (err) {
    if (run === state.run) setStatus(`Request failed: ${err.message || err}`, true);
    return;
  }
  if (run !== state.run) return;
  const rtt = performance.now() - started;
  $("json").textContent = JSON.stringify(body, null, 2);
  if (!response.ok) {
    setStatus(`${response.status}: ${body.error || "error"}`, true);
    return;
  }
  const image = body.images[0];
  draw(image.results);
  const n = image.results.length;
  const where = home() ? ` (served in ${home().region}, the tenant's data region, at ${home().url})` : "";
  setStatus(`${n} detection${n === 1 ? "" : "s"} in ${state.filename}${where}`);
  const fmt = (ms) => `${ms.toFixed(1)} ms`;
  $("t-pre").textContent = fmt(image.speed.preprocess);
  $("t-inf").textContent = fmt(image.speed.inference);
  $("t-post").textContent = fmt(image.speed.postprocess);
  $("t-call").textContent = fmt(body.metadata.functionTimeCall);
  $("t-rtt").textContent = fmt(rtt);
  $("timings").hidden = false;
}

/** Show and run ``blob``; ``sample`` is its sample name, null for an upload. */
function loadImage(blob, filename, sample, pick) {
  state.blob = blob;
  state.filename = filename;
  state.sample = sample;
  state.image = null;
  state.run += 1; // a request still in flight belongs to the previous image
  highlight(sample);
  $("json").textContent = "";
  const img = new Image();
  img.onload = () => {
    if (pick !== state.pick) return;
    state.image = img;
    $("run").disabled = false;
    predict();
  };
  img.onerror = () => {
    if (pick !== state.pick) return;
    clearCanvas();
    $("run").disabled = true;
    renderSnippets();
    setStatus(`${filename} is not an image this browser can show (JPEG, PNG, WebP or BMP)`, true);
  };
  img.src = URL.createObjectURL(blob);
}

async function pickSample(name) {
  const pick = ++state.pick;
  highlight(name);
  const res = await fetch(`/samples/${encodeURIComponent(name)}`);
  const blob = await res.blob();
  if (pick === state.pick) loadImage(blob, name, name, pick);
}

/** Keep a field across visits and rerun with its new value. */
function remember(id) {
  const saved = localStorage.getItem(`testPage.${id}`);
  if (saved) $(id).value = saved;
  $(id).addEventListener("change", async () => {
    localStorage.setItem(`testPage.${id}`, $(id).value.trim());
    await loadModelFacts();
    predict();
  });
  $(id).addEventListener("input", renderSnippets);
}

/** The header line and the iou control, from the server's mode and the model's facts. */
function describe() {
  const info = state.info;
  const facts = state.facts;
  const away = home() ? `, the tenant's models: ${home().region} at ${home().url}` : "";
  const where = info.mode === "shared" ? `region ${info.region}${away}` : "";
  $("model-name").textContent = info.mode === "shared" ? "· shared API" : (info.model ? `· ${info.model}` : "");
  const model = facts?.task
    ? `${facts.task} model${info.mode === "shared" ? ` ${facts.model}` : ""}, imgsz ${facts.imgsz}, ` +
      (facts.end2end ? "end-to-end (NMS-free)" : "with NMS")
    : (info.mode === "shared" ? "a tenant key and the owner, project and model of one of the tenant's models" : "model loading…");
  $("model-meta").textContent = [where, model, `server ${info.version}`].filter(Boolean).join(" · ");
  $("imgsz").placeholder = facts?.imgsz ? `${facts.imgsz} (model default)` : "model default";
  $("imgsz").min = facts?.minImgsz ?? 32;  // the spinner starts at the smallest size the model accepts
  $("imgsz").step = facts?.stride ?? 32;
  $("iou").disabled = isEndToEnd();
  $("iou-note").textContent = isEndToEnd()
    ? "This model is end-to-end (NMS-free): it ignores iou, as ultralytics does."
    : (facts?.task ? "" : "End-to-end (NMS-free) models ignore iou, as ultralytics does.");
  renderSnippets();
}

/** Shared mode: the facts of the tenant model named by the key and owner/project/model fields, if it can be read. */
async function loadModelFacts() {
  state.facts = null;
  if (!authRequired() || !apiKey() || missingTarget().length) return describe();
  try {
    const res = await send(endpoint(state.info.infoPath), { headers: { Authorization: `Bearer ${apiKey()}` } });
    if (res.ok) state.facts = await res.json();
  } catch {
    // the predict that follows reports what is wrong
  }
  describe();
}

async function loadInfo() {
  state.info = await (await fetch("/info")).json();
  if (state.info.mode !== "shared") state.facts = state.info.task ? state.info : null;
  describe();
  if (state.info.mode !== "shared" && !state.info.task) setTimeout(loadInfo, 1000); // still loading
}

async function init() {
  $("api-key").value = localStorage.getItem("testPage.api-key") || "";
  $("api-key").addEventListener("change", async () => {
    localStorage.setItem("testPage.api-key", apiKey());
    if (isShared()) await loadModelFacts();
    predict();
  });
  for (const id of ["conf", "iou"]) {
    $(id).addEventListener("input", () => { $(`${id}-out`).textContent = Number($(id).value).toFixed(2); });
    $(id).addEventListener("change", predict);
  }
  $("imgsz").addEventListener("change", predict);
  $("run").addEventListener("click", predict);
  $("upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) loadImage(file, file.name, null, ++state.pick);
  });
  document.querySelectorAll("[data-copy]").forEach((btn) => btn.addEventListener("click", async () => {
    await navigator.clipboard.writeText($(btn.dataset.copy).textContent);
    btn.textContent = "Copied";
    setTimeout(() => { btn.textContent = "Copy"; }, 1500);
  }));
  await loadInfo();
  const info = state.info;
  $("key-row").hidden = !info.authRequired;
  $("target").hidden = info.mode !== "shared";
  clearCanvas();
  for (const name of info.samples) {
    const button = document.createElement("button");
    button.type = "button";
    button.title = name;
    button.dataset.sample = name;
    const img = document.createElement("img");
    img.src = `/samples/${encodeURIComponent(name)}`;
    img.alt = name;
    button.appendChild(img);
    button.addEventListener("click", () => pickSample(name));
    $("samples").appendChild(button);
  }
  if (info.mode === "shared") {
    $("key-label").textContent = "Tenant API key";
    TARGET.forEach(remember);
    await loadModelFacts();
  }
}

init();
