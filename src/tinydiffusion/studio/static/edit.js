// Edit: an input picture (an upload, or a click on an image of the Generate result), a mask painted with the
// mouse (painted = generate), strength, then POST /api/edit/stream read as Server-Sent Events with fetch.
// The context, guidance, seed and images come from the controls on the left; so do the sampler and steps of an
// img2img edit, while inpainting (a mask) uses its own defaults: RePaint over the API's 50 DDPM steps, strength 1
// (unless the strength slider was moved).
import { $, state, showError, clearError, fmtNum, plural, announce, postStream, cancelJob, describeGrid,
  InputError, SAMPLER_NAMES } from "./util.js";
import { samplingParams } from "./controls.js";

const edit = { size: 0, input: null, mask: null, painting: false, ctrl: null, job: null, frames: 0, strengthSet: false };
const STRENGTH = { img2img: 0.6, inpaint: 1 };  // the API's defaults

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
  if (img) announce("Input picture loaded: paint the region to generate, or press Edit.");
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
  canvas.setAttribute("aria-label", !edit.input ? "The input picture and its mask: no input yet"
    : `The input picture, ${S}×${S} pixels, ${painted ? `${painted} of them painted to generate` : "nothing painted"}`);
  if (!edit.strengthSet) {  // the defaults of what it now is: img2img 0.6, inpainting 1
    const v = painted ? STRENGTH.inpaint : STRENGTH.img2img;
    $("edit-strength").value = String(v);
    $("edit-strength-out").textContent = v.toFixed(2);
  }
  describePlan();
}

// What the Edit button will run, in words.
export function describePlan() {
  const painted = edit.mask && edit.mask.some((v) => v);
  const strength = fmtNum($("edit-strength").value);
  let how;
  if (painted) how = `inpainting: RePaint over 50 DDPM steps, strength ${strength}`;
  else {
    const m = state.model, student = !!(m && m.distilled);
    const steps = Number(student ? $("steps-choice").value : $("steps").value) || 0;
    const k = steps ? Math.min(steps, Math.max(1, Math.floor(Number(strength) * steps + 0.5))) : 0;
    how = `img2img: ${SAMPLER_NAMES[$("sampler").value] || $("sampler").value}, `
      + (steps ? `the last ${k} of ${plural(steps, "step")} (strength ${strength})` : `strength ${strength} of the card's steps`);
    if (steps && k === steps && Number(strength) < 1) how += " — this rounds to the whole grid: the input would be ignored";
  }
  $("edit-plan").textContent = how;
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
  const busy = s === "queued" || s === "running" || s === "connecting" || s === "loading";
  $("edit-run").setAttribute("aria-disabled", String(busy));
  $("edit-run").disabled = !edit.input;
  $("edit-cancel").disabled = !busy;
}

export function editBusy() {
  return edit.ctrl !== null;
}

// The request: the left column's parameters, the pictures and the strength; with a mask, inpainting's own sampler
// and steps (the API's defaults: 50 DDPM steps), not the left column's (10 DPM-Solver++ steps left 6 noisy ones).
function editBody() {
  const body = { ...samplingParams(), image: edit.inputCanvas.toDataURL("image/png"), strength: Number($("edit-strength").value) };
  if (edit.mask.some((v) => v)) {
    body.mask = maskUrl();
    delete body.sampler; delete body.steps; delete body.eta;
  }
  return body;
}

export async function runEdit() {
  clearError();
  if (!state.model || !edit.input) { showError("Choose an input picture first."); return; }
  if (editBusy()) return;
  let body;
  try { body = editBody(); } catch (err) {
    if (!(err instanceof InputError)) throw err;
    showError(err.message, err.field);
    return;
  }
  const live = $("edit-live");
  edit.frames = 0;
  live.dataset.frames = "0";
  live.hidden = false;
  $("edit-result").hidden = true;
  for (const id of ["edit-xt", "edit-x0"]) $(id).removeAttribute("src");
  setEditState("connecting", "connecting…");
  announce("Editing…");
  const ctrl = new AbortController();
  edit.ctrl = ctrl;
  try {
    await postStream("/api/edit/stream", body, onEvent, ctrl.signal);
  } catch (err) {
    if (ctrl.signal.aborted) return;
    showError(err.message);
    setEditState("error", "error");
    announce(`Error: ${err.message}`);
  } finally {
    if (edit.ctrl === ctrl) edit.ctrl = null;
  }
}

// One event of the stream; true when it was the last.
function onEvent(event, d) {
  if (d.job) edit.job = d.job;
  if (event === "queued") { setEditState("queued", d.position > 0 ? `queued (#${d.position + 1})` : "starting…"); return false; }
  if (event === "loading") { setEditState("loading", `loading the ${d.what}…`); announce(`Loading the ${d.what}.`); return false; }
  if (event === "frame") {
    $("edit-live").hidden = false;
    $("edit-xt").src = d.x_t;
    $("edit-x0").src = d.x0;
    edit.frames += 1;
    $("edit-live").dataset.frames = String(edit.frames);
    $("edit-progress").style.width = `${(100 * d.step) / d.steps}%`;
    setEditState("running", `denoising… ${d.step}/${d.steps}`);
    return false;
  }
  if (event === "done") {
    const what = d.inpaint ? "inpainting" : "img2img";
    $("edit-grid").src = d.grid;
    $("edit-grid").alt = `Edit result (${what}, strength ${fmtNum(d.strength)}): each row the input, `
      + `${d.inpaint ? "the mask, " : ""}then ${describeGrid({ ...d, sampler: null }, "edits")}`;
    $("edit-info").textContent = `${what} · strength ${fmtNum(d.strength)} · ${d.sampler} · ${plural(d.steps, "step")} · ${fmtNum(d.seconds)} s · ${d.nfe} network evals`;
    $("edit-dl-png").href = d.downloads.png;
    $("edit-dl-gif").href = d.downloads.gif;
    $("edit-result").hidden = false;
    $("edit-live").hidden = true;  // the result takes the live frames' place: above the fold
    $("edit-grid").decode().catch(() => {}).then(() => $("edit-result").scrollIntoView({ block: "nearest" }));
    $("edit-progress").style.width = "100%";
    setEditState("done", `done in ${fmtNum(d.seconds)} s`);
    announce(`Edit done in ${fmtNum(d.seconds)} s.`);
    return true;
  }
  if (event === "error") {
    if (d.cancelled) { setEditState("cancelled", "cancelled"); announce("Cancelled."); }
    else { showError(d.error); setEditState("error", "error"); announce(`Error: ${d.error}`); }
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
    try { await cancelJob(job); } catch (_) { /* finished */ }
  }
}

export function initEdit() {
  $("edit-upload").addEventListener("click", () => $("edit-file").click());  // a button: reachable from the keyboard
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
  $("edit-strength").addEventListener("input", () => {
    edit.strengthSet = true;  // the user's choice now, whatever the mask
    $("edit-strength-out").textContent = Number($("edit-strength").value).toFixed(2);
    describePlan();
  });
  for (const id of ["sampler", "steps", "steps-choice"]) $(id).addEventListener("change", describePlan);
  $("edit-clear").addEventListener("click", () => { edit.mask.fill(0); draw(); });
  $("edit-invert").addEventListener("click", () => { edit.mask = edit.mask.map((v) => 1 - v); draw(); });
  $("edit-run").addEventListener("click", runEdit);
  $("edit-cancel").addEventListener("click", () => editCancel(false));
  setEditState("idle", "ready");
  resetEdit();
}
