// tinydiffusion studio: plain ES2020 modules, no build step, no network beyond this server's /api/.
// Shared state and small helpers: the API calls (JSON, and Server-Sent Events read from a POST), messages
// (the error box, the screen reader's live region), input errors marked on their field.

export const $ = (id) => document.getElementById(id);
export const state = { models: [], model: null, ctrl: null, job: null, runTimer: null, runs: [], frames: [], replay: null,
  lastDone: null, preferRun: null };

export const UNREACHABLE = "The studio server is not reachable: is `tinydiffusion serve` still running?";

// ---------- the API ----------

// fetch, with the browser's "Failed to fetch" said in words
export async function send(path, options = {}) {
  try {
    return await fetch(path, options);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new Error(UNREACHABLE);
  }
}

export async function api(path, options = {}) {
  const res = await send(path, options);
  const type = res.headers.get("content-type") || "";
  const body = type.includes("json") ? await res.json().catch(() => null) : null;
  if (!res.ok) throw new Error(body && body.error ? body.error : `${res.status} ${res.statusText}`);
  return body;
}

export function postJSON(path, body, options = {}) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body), ...options });
}

// POST a JSON body and read the answer as Server-Sent Events: onEvent(name, data) for each, until it returns true
// (the last event). A refusal before the job is queued is a JSON error: thrown with its message.
export async function postStream(path, body, onEvent, signal) {
  const res = await send(path, {
    method: "POST", signal, body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
  });
  if (!res.ok) {
    const err = await res.json().catch(() => null);
    throw new Error(err && err.error ? err.error : `${res.status} ${res.statusText}`);
  }
  const reader = res.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    let chunk;
    try { chunk = await reader.read(); } catch (err) {
      if (err.name === "AbortError" || (signal && signal.aborted)) throw err;
      throw new Error(UNREACHABLE);
    }
    if (chunk.done) break;
    buffer += decoder.decode(chunk.value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = (block.match(/^event: (.*)$/m) || [])[1];
      const data = (block.match(/^data: (.*)$/m) || [])[1];
      if (event && data && onEvent(event, JSON.parse(data))) { reader.cancel().catch(() => {}); return; }
    }
  }
  throw new Error("The stream was interrupted before the result came: the server may have stopped.");
}

export function cancelJob(job) {
  return api(`/api/jobs/${encodeURIComponent(job)}/cancel`, { method: "POST" });
}

// ---------- messages ----------

// The offending field of a message that starts "steps=0 is not allowed…" (the server's and the page's own).
const FIELDS = { steps: "steps", guidance: "guidance", guidance_rescale: "guidance-rescale", eta: "eta", seed: "seed",
  n: "n", strength: "edit-strength", context: "prompt", context_to: "prompt-to", mix: "mix", settings: "compare-settings",
  guidance_interval: "guidance-lo", guide: "guide", guide_scale: "guide-scale", snap: "snap", base: "teach-base", class: "teach-class", prompt: "teach-prompt",
  minutes: "teach-minutes", images: "teach-drop", report_samples: "teach-report-samples" };

export function showError(message, field = null) {
  clearError();
  $("error-text").textContent = message;
  $("error").hidden = false;
  const key = field || (String(message).match(/^(\w+)=/) || [])[1];
  const target = key && $(FIELDS[key] || key);
  if (target) target.setAttribute("aria-invalid", "true");
  $("error").scrollIntoView({ block: "nearest" });
}

export function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
  for (const node of document.querySelectorAll("[aria-invalid=true]")) node.removeAttribute("aria-invalid");
}

// Said by screen readers (a polite live region): progress and results.
export function announce(text) {
  $("announce").textContent = text;
}

// A value the page could not read (a number field holding "3e" or "1e400"): refused before any request.
export class InputError extends Error {
  constructor(field, message) { super(message); this.field = field; }
}

// ---------- formatting ----------

export function fmtNum(x) {
  return Number(x).toFixed(2).replace(/\.?0+$/, "");
}

export function plural(n, word) {
  return `${n} ${word}${Number(n) === 1 ? "" : "s"}`;
}

export function fmtParams(p) {
  if (p == null) return "?";
  if (p >= 1e6) return (p / 1e6).toFixed(2) + " M";
  if (p >= 1e3) return (p / 1e3).toFixed(1) + " k";
  return String(p);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// What a grid shows, for its alt text: "4 images of square=1,hbar=0.6 (DDIM, 12 steps)".
export function describeGrid(d, what = "images") {
  const rows = (d.rows || d.contexts || []).filter(Boolean);
  const n = d.n || 1;
  const of = rows.length === 1 ? ` of ${rows[0]}` : rows.length > 1 ? `, ${rows.length} rows (${rows.join("; ")})` : "";
  const how = d.sampler ? ` (${SAMPLER_NAMES[d.sampler] || d.sampler}, ${plural(d.steps, "step")})` : "";
  return `${plural(n * Math.max(1, rows.length), what.replace(/s$/, ""))}${of}${how}`;
}

export const SAMPLER_NAMES = { ddpm: "DDPM", ddim: "DDIM", dpmpp_2m: "DPM-Solver++ 2M", euler: "Euler", consistency: "Consistency" };
export const SHORT_NAMES = { ddpm: "DDPM", ddim: "DDIM", dpmpp_2m: "DPM++ 2M", euler: "Euler", consistency: "Consistency" };
