// tinydiffusion studio: plain ES2020 modules, no build step, no network beyond this server's /api/.
// Shared state and small helpers.

export const $ = (id) => document.getElementById(id);
export const state = { models: [], model: null, es: null, job: null, runTimer: null, runs: [], frames: [], replay: null,
  lastDone: null };

// ---------- helpers ----------

export async function api(path, options = {}) {
  const res = await fetch(path, options);
  const type = res.headers.get("content-type") || "";
  const body = type.includes("json") ? await res.json().catch(() => null) : null;
  if (!res.ok) {
    const msg = body && body.error ? body.error : `${res.status} ${res.statusText}`;
    throw new Error(msg);
  }
  return body;
}

export function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
  $("error").scrollIntoView({ block: "nearest" });
}

export function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

export function fmtNum(x) {
  return Number(x).toFixed(2).replace(/\.?0+$/, "");
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

export const SAMPLER_NAMES = { ddpm: "DDPM", ddim: "DDIM", dpmpp_2m: "DPM-Solver++ 2M", euler: "Euler", consistency: "Consistency" };
export const SHORT_NAMES = { ddpm: "DDPM", ddim: "DDIM", dpmpp_2m: "DPM++ 2M", euler: "Euler", consistency: "Consistency" };
