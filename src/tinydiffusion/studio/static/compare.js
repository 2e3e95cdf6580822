// Compare: the same seeds through 2–4 SAMPLER:STEPS settings (POST /api/compare, read as Server-Sent Events for
// its progress), one row each with its time, network evaluations and the context of each row of images.
import { $, state, el, showError, clearError, fmtNum, plural, announce, postStream, cancelJob, InputError,
  SAMPLER_NAMES, SHORT_NAMES } from "./util.js";
import { samplingParams } from "./controls.js";

const run = { ctrl: null, job: null };

export function settingRow(sampler, steps) {
  const select = el("select", { "data-testid": "compare-sampler", "aria-label": "sampler" });
  const student = state.model && state.model.distilled;  // a student: its own sampler only
  for (const [v, label] of Object.entries(SHORT_NAMES)) {
    if (!student || v === student.sampler) select.append(el("option", { value: v, text: label }));
  }
  select.value = sampler;
  const input = el("input", { type: "number", min: "1", step: "1", value: String(steps), "data-testid": "compare-steps", "aria-label": "steps" });
  const remove = el("button", { class: "icon", title: "Remove this setting", "aria-label": "Remove this setting", text: "×" });
  const row = el("div", { class: "setting row" }, select, el("span", { class: "muted", text: "steps" }), input, remove);
  remove.addEventListener("click", () => {
    if ($("compare-settings").children.length > 2) row.remove();
    updateCompareButtons();
  });
  return row;
}

export function renderCompareSettings(reset = false) {
  const box = $("compare-settings");
  if (!reset && box.children.length) return;
  const m = state.model;
  const d = (m && m.defaults) || {};
  const T = (m && m.T) || 500;
  const s = m && m.distilled;
  if (s) {  // a student: its step counts (the one it has, twice, if only one)
    const counts = s.steps.length > 1 ? s.steps.slice(0, 4) : [s.steps[0], s.steps[0]];
    box.replaceChildren(...counts.map((k) => settingRow(s.sampler, k)));
    updateCompareButtons();
    return;
  }
  box.replaceChildren(settingRow("ddpm", T), settingRow(d.sampler && d.sampler !== "ddpm" ? d.sampler : "ddim", d.steps && d.sampler !== "ddpm" ? d.steps : Math.min(25, T)));
  updateCompareButtons();
}

// The row "+ setting" adds: DPM-Solver++ 2M in 10 steps, or a student's own sampler at its most steps.
export function newSettingRow() {
  const s = state.model && state.model.distilled;
  return s ? settingRow(s.sampler, s.steps[s.steps.length - 1]) : settingRow("dpmpp_2m", 10);
}

export function updateCompareButtons() {
  $("compare-add").disabled = $("compare-settings").children.length >= 4;
}

function setCompareState(s, label) {
  $("compare-results").dataset.state = s;
  $("compare-status").textContent = label;
  const busy = s === "running";
  $("compare-run").setAttribute("aria-disabled", String(busy));
  $("compare-cancel").disabled = !busy;
}

export function compareBusy() {
  return $("compare-results").dataset.state === "running";
}

export async function runCompare() {
  if (compareBusy()) return;
  clearError();
  const settings = [...$("compare-settings").children].map((row) => {
    const [select, , input] = row.children;
    return `${select.value}:${input.value}`;
  });
  let params;
  try { params = samplingParams(); } catch (err) {
    if (!(err instanceof InputError)) throw err;
    showError(err.message, err.field);
    return;
  }
  delete params.sampler; delete params.steps; delete params.eta;
  const steps = settings.map((s) => Number(s.split(":")[1]) || 0), total = steps.reduce((a, b) => a + b, 0) || 1;
  const ctrl = new AbortController();
  run.ctrl = ctrl;
  run.job = null;
  $("compare-progress").style.width = "0%";
  setCompareState("running", "sampling…");
  announce(`Comparing ${settings.length} settings…`);
  const t0 = performance.now();
  try {
    await postStream("/api/compare", { ...params, settings }, (event, d) => {
      if (d.job) run.job = d.job;
      if (event === "queued") setCompareState("running", d.position > 0 ? `queued (#${d.position + 1})` : "starting…");
      if (event === "loading") setCompareState("running", `loading ${d.what === "model" ? "the model" : d.what}…`);
      if (event === "progress") {
        const done = steps.slice(0, d.setting).reduce((a, b) => a + b, 0) + d.step;
        $("compare-progress").style.width = `${(100 * done) / total}%`;
        setCompareState("running", `setting ${d.setting + 1} of ${d.settings}: step ${d.step}/${d.steps}`);
      }
      if (event === "done") { showRows(d, (performance.now() - t0) / 1000); return true; }
      if (event === "error") {
        if (d.cancelled) { setCompareState("cancelled", "cancelled"); announce("Cancelled."); }
        else { setCompareState("error", ""); showError(d.error); }
        return true;
      }
      return false;
    }, ctrl.signal);
  } catch (err) {
    if (ctrl.signal.aborted) return;
    setCompareState("error", "");
    showError(err.message);
  } finally {
    if (run.ctrl === ctrl) run.ctrl = null;
  }
}

function showRows(data, wall) {
  const results = $("compare-results");
  results.replaceChildren();
  const slowest = Math.max(...data.rows.map((r) => r.seconds), 1e-9);
  const contexts = data.contexts || [];
  for (const r of data.rows) {
    const [sampler, steps] = r.setting.split(":");
    const fill = el("div");
    fill.style.width = `${(100 * r.seconds) / slowest}%`;  // CSSOM: allowed by the page's CSP, unlike style=""
    const labels = el("div", { class: "row-labels" }, ...(contexts.length > 1 ? contexts.map((c) => el("span", { text: c, title: c })) : []));
    labels.style.gridTemplateRows = `repeat(${Math.max(1, contexts.length)}, 1fr)`;
    const what = `${SAMPLER_NAMES[sampler] || sampler}, ${plural(steps, "step")}`;
    const alt = `${what}: ${plural(data.n * Math.max(1, contexts.length), "image")}${contexts.length ? ` of ${contexts.join("; ")}` : ""}`;
    results.append(el("figure", { class: "card compare-item", "data-testid": "compare-item" },
      el("figcaption", {},
        el("h3", { text: `${SHORT_NAMES[sampler] || sampler}` }),
        el("div", { class: "big", text: plural(steps, "step") }),
        el("div", { class: "muted", text: `${fmtNum(r.seconds)} s` }), el("div", { class: "timebar" }, fill),
        el("div", { class: "muted", text: `${r.nfe} network evals` })),
      el("div", { class: `final-wrap${contexts.length > 1 ? " labelled" : ""}` }, labels,
        el("div", { class: "imgbox" }, el("img", { src: r.grid, alt })))));
  }
  $("compare-progress").style.width = "100%";
  setCompareState("done", `done in ${fmtNum(wall)} s`);
  announce(`Comparison done in ${fmtNum(wall)} s: ${data.rows.map((r) => `${r.setting} ${fmtNum(r.seconds)} s`).join(", ")}.`);
}

export async function cancelCompare() {
  const ctrl = run.ctrl, job = run.job;
  run.ctrl = null;
  if (!ctrl) return;
  ctrl.abort();  // a closed stream cancels its job on the server; say so explicitly too
  setCompareState("cancelled", "cancelled");
  announce("Cancelled.");
  if (job) { try { await cancelJob(job); } catch (_) { /* finished meanwhile */ } }
}
