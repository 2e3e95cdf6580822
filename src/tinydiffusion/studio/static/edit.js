// Edit: an input picture (an upload, or a click on an image of the Generate result), a mask painted with the
// mouse (painted = generate), strength, then POST /api/edit/stream read as Server-Sent Events with fetch.
// The context, sampler, steps, guidance, seed and images come from the controls on the left.
import { $, state, api, showError, clearError, fmtNum } from "./util.js";
import { samplingParams } from "./controls.js";

const edit = { size: 0, input: null, mask: null, painting: false, ctrl: null, job: null, frames: 0 };

function size() { return (state.model && state.model.image_size) || 32; }

// A new model: the input is redrawn at its size (the mask is cleared).
export function resetEdit() {
  editCancel(true);
  edit.size = size();
  edit.mask = new Uint8Array(edit.size * edit.size);
  if (edit.input) setInput(edit.input.src ? edit.input : null);
  draw();
}

// ---------- the input ----------

function setInput(img) {
  const S = size();
  const c = document.createElement("canvas");
  c.width = c.height = S;
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, S, S);
  if (img) {  // centre-crop to a square, as the server reads pictures
    const w = img.naturalWidth, h = img.naturalHeight, side = Math.min(w, h);
    ctx.imageSmoothingEnabled = side > S;  // pixel art stays sharp when enlarged
    ctx.drawImage(img, (w - side) / 2, (h - side) / 2, side, side, 0, 0, S, S);
  }
  edit.size = S;
  edit.input = img;
  edit.inputCanvas = c;
  edit.mask = new Uint8Array(S * S);
  $("edit-canvas").dataset.input = img ? "1" : "0";
  $("edit-run").disabled = !img;
  $("edit-hint").hidden = !!img;
  draw();
}

export function uploadFile(file) {
  if (!file) return;
  if (!/^image\/(png|jpeg)$/.test(file.type)) { showError(`${file.name}: expected a PNG or JPEG image`); return; }
  const reader = new FileReader();
  reader.onload = () => loadImage(reader.result);
  reader.readAsDataURL(file);
}

function loadImage(src) {
  const img = new Image();
  img.onload = () => setInput(img);
  img.onerror = () => showError("The picture could not be read; expected a PNG or JPEG image.");
  img.src = src;
}

// A click on the Generate result: the image under the pointer (the grid has a 1 px gap around each image).
export function useSample(event) {
  const grid = event.currentTarget, d = state.lastDone;
  if (!d || !grid.naturalWidth) return;
  const S = size(), ncol = d.n, nrow = Math.max(1, (d.rows || []).length);
  const unit = grid.naturalWidth / (ncol * (S + 1) + 1);
  const x = (event.offsetX * grid.naturalWidth) / grid.clientWidth, y = (event.offsetY * grid.naturalHeight) / grid.clientHeight;
  const col = Math.min(ncol - 1, Math.max(0, Math.floor((x - unit) / ((S + 1) * unit))));
  const row = Math.min(nrow - 1, Math.max(0, Math.floor((y - unit) / ((S + 1) * unit))));
  const c = document.createElement("canvas");
  c.width = c.height = S;
  const ctx = c.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(grid, (1 + col * (S + 1)) * unit, (1 + row * (S + 1)) * unit, S * unit, S * unit, 0, 0, S, S);
  loadImage(c.toDataURL("image/png"));
  $("tab-edit").click();
}

// ---------- the mask ----------

function draw() {
  const canvas = $("edit-canvas"), ctx = canvas.getContext("2d"), W = canvas.width, S = edit.size || size();
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#0b0d11";
  ctx.fillRect(0, 0, W, W);
  if (edit.inputCanvas && edit.input) ctx.drawImage(edit.inputCanvas, 0, 0, W, W);
  const cell = W / S;
  ctx.fillStyle = "rgba(255, 0, 140, 0.75)";  // painted: generated
  let painted = 0;
  for (let i = 0; i < S * S; i++) {
    if (!edit.mask || !edit.mask[i]) continue;
    painted++;
    ctx.fillRect((i % S) * cell, Math.floor(i / S) * cell, cell, cell);
  }
  canvas.dataset.painted = String(painted);
  $("edit-mask-info").textContent = painted ? `${painted} of ${S * S} pixels to generate (inpainting)` : "no mask: the whole picture is re-dressed (img2img)";
}

function paintAt(event) {
  const canvas = $("edit-canvas"), S = edit.size, r = Number($("edit-brush").value) / 2;
  const rect = canvas.getBoundingClientRect();
  const px = ((event.clientX - rect.left) / rect.width) * S, py = ((event.clientY - rect.top) / rect.height) * S;
  for (let y = Math.floor(py - r); y <= Math.ceil(py + r); y++) {
    for (let x = Math.floor(px - r); x <= Math.ceil(px + r); x++) {
      if (x < 0 || y < 0 || x >= S || y >= S) continue;
      if ((x + 0.5 - px) ** 2 + (y + 0.5 - py) ** 2 <= Math.max(r * r, 0.5)) edit.mask[y * S + x] = edit.erase ? 0 : 1;
    }
  }
  draw();
}

function maskUrl() {
  const S = edit.size, c = document.createElement("canvas");
  c.width = c.height = S;
  const ctx = c.getContext("2d"), data = ctx.createImageData(S, S);
  for (let i = 0; i < S * S; i++) {
    const v = edit.mask[i] ? 0 : 255;  // white = keep, black = generate
    data.data.set([v, v, v, 255], 4 * i);
  }
  ctx.putImageData(data, 0, 0);
  return c.toDataURL("image/png");
}

// ---------- running ----------

function setEditState(s, label) {
  $("edit-live").dataset.state = s;
  $("edit-state").textContent = label || s;
  const busy = s === "queued" || s === "running" || s === "connecting";
  $("edit-run").disabled = busy || !edit.input;
  $("edit-cancel").disabled = !busy;
}

export async function runEdit() {
  clearError();
  if (!state.model || !edit.input) { showError("Choose an input picture first."); return; }
  editCancel(true);
  const body = { ...samplingParams(), image: edit.inputCanvas.toDataURL("image/png"), strength: Number($("edit-strength").value) };
  if (edit.mask.some((v) => v)) body.mask = maskUrl();
  const live = $("edit-live");
  edit.frames = 0;
  live.dataset.frames = "0";
  live.hidden = false;
  $("edit-result").hidden = true;
  for (const id of ["edit-xt", "edit-x0"]) $(id).removeAttribute("src");
  setEditState("connecting", "connecting…");
  const ctrl = new AbortController();
  edit.ctrl = ctrl;
  try {
    const res = await fetch("/api/edit/stream", {
      method: "POST", signal: ctrl.signal, body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    });
    if (!res.ok) {
      const err = await res.json().catch(() => null);
      throw new Error(err && err.error ? err.error : `${res.status} ${res.statusText}`);
    }
    const reader = res.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = (block.match(/^event: (.*)$/m) || [])[1];
        const data = (block.match(/^data: (.*)$/m) || [])[1];
        if (event && data && onEvent(event, JSON.parse(data))) { ctrl.abort(); return; }
      }
    }
    if (edit.ctrl === ctrl) throw new Error("The stream was interrupted.");
  } catch (err) {
    if (ctrl.signal.aborted) return;
    showError(err.message);
    setEditState("error", "error");
  } finally {
    if (edit.ctrl === ctrl) edit.ctrl = null;
  }
}

// One event of the stream; true when it was the last.
function onEvent(event, d) {
  if (d.job) edit.job = d.job;
  if (event === "queued") { setEditState("queued", d.position > 0 ? `queued (#${d.position + 1})` : "starting…"); return false; }
  if (event === "frame") {
    $("edit-xt").src = d.x_t;
    $("edit-x0").src = d.x0;
    edit.frames += 1;
    $("edit-live").dataset.frames = String(edit.frames);
    $("edit-progress").style.width = `${(100 * d.step) / d.steps}%`;
    setEditState("running", `denoising… ${d.step}/${d.steps}`);
    return false;
  }
  if (event === "done") {
    $("edit-grid").src = d.grid;
    $("edit-info").textContent = `${d.inpaint ? "inpainting" : "img2img"} · strength ${fmtNum(d.strength)} · ${d.sampler} · ${fmtNum(d.seconds)} s · ${d.nfe} network evals`;
    $("edit-dl-png").href = d.downloads.png;
    $("edit-dl-gif").href = d.downloads.gif;
    $("edit-result").hidden = false;
    $("edit-progress").style.width = "100%";
    setEditState("done", `done in ${fmtNum(d.seconds)} s`);
    return true;
  }
  if (event === "error") {
    if (d.cancelled) setEditState("cancelled", "cancelled");
    else { showError(d.error); setEditState("error", "error"); }
    return true;
  }
  return false;
}

export async function editCancel(quiet = false) {
  const ctrl = edit.ctrl, job = edit.job;
  edit.ctrl = null;
  if (!ctrl) return;
  ctrl.abort();  // closing the stream cancels the job on the server; say so explicitly too
  setEditState("cancelled", "cancelled");
  if (job && !quiet) {
    try { await api(`/api/jobs/${encodeURIComponent(job)}/cancel`, { method: "POST" }); } catch (_) { /* finished */ }
  }
}

export function initEdit() {
  $("edit-file").addEventListener("change", (e) => uploadFile(e.target.files[0]));
  $("final-grid").addEventListener("click", useSample);
  const canvas = $("edit-canvas");
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointerdown", (e) => {
    if (!edit.input) return;
    edit.painting = true;
    edit.erase = e.button === 2 || e.shiftKey;  // right button or Shift erases
    canvas.setPointerCapture(e.pointerId);
    paintAt(e);
  });
  canvas.addEventListener("pointermove", (e) => { if (edit.painting) paintAt(e); });
  for (const type of ["pointerup", "pointercancel"]) canvas.addEventListener(type, () => { edit.painting = false; });
  $("edit-brush").addEventListener("input", () => { $("edit-brush-out").textContent = $("edit-brush").value; });
  $("edit-strength").addEventListener("input", () => { $("edit-strength-out").textContent = Number($("edit-strength").value).toFixed(2); });
  $("edit-clear").addEventListener("click", () => { edit.mask.fill(0); draw(); });
  $("edit-invert").addEventListener("click", () => { edit.mask = edit.mask.map((v) => 1 - v); draw(); });
  $("edit-run").addEventListener("click", runEdit);
  $("edit-cancel").addEventListener("click", () => editCancel(false));
  setEditState("idle", "ready");
  resetEdit();
}
