// Compare: the same seeds through 2–4 SAMPLER:STEPS settings (POST /api/compare), one row each.
import { $, state, el, api, showError, clearError, fmtNum, SAMPLER_NAMES, SHORT_NAMES } from "./util.js";
import { samplingParams } from "./controls.js";

export function settingRow(sampler, steps) {
  const select = el("select", { "data-testid": "compare-sampler", "aria-label": "sampler" });
  const student = state.model && state.model.distilled;  // a student: its own sampler only
  for (const [v, label] of Object.entries(SAMPLER_NAMES)) {
    if (!student || v === student.sampler) select.append(el("option", { value: v, text: label }));
  }
  select.value = sampler;
  const input = el("input", { type: "number", min: "1", step: "1", value: String(steps), "data-testid": "compare-steps", "aria-label": "steps" });
  const remove = el("button", { class: "icon", title: "Remove", text: "×" });
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

export async function runCompare() {
  clearError();
  const settings = [...$("compare-settings").children].map((row) => {
    const [select, , input] = row.children;
    return `${select.value}:${input.value}`;
  });
  const params = samplingParams();
  delete params.sampler; delete params.steps; delete params.eta;
  const body = { ...params, settings };
  const results = $("compare-results");
  $("compare-run").disabled = true;
  $("compare-status").textContent = "sampling…";
  results.dataset.state = "running";
  const t0 = performance.now();
  try {
    const data = await api("/api/compare", {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    results.replaceChildren();
    const slowest = Math.max(...data.rows.map((r) => r.seconds), 1e-9);
    for (const r of data.rows) {
      const [sampler, steps] = r.setting.split(":");
      const bar = el("div", { class: "timebar" }, el("div", { style: `width:${(100 * r.seconds) / slowest}%` }));
      results.append(el("figure", { class: "card compare-item", "data-testid": "compare-item" },
        el("figcaption", {},
          el("h3", { text: `${SHORT_NAMES[sampler] || sampler}` }),
          el("div", { class: "big", text: `${steps} steps` }),
          el("div", { class: "muted", text: `${fmtNum(r.seconds)} s` }), bar,
          el("div", { class: "muted", text: `${r.nfe} network evals` })),
        el("div", { class: "imgbox" }, el("img", { src: r.grid, alt: r.setting }))));
    }
    results.dataset.state = "done";
    $("compare-status").textContent = `done in ${fmtNum((performance.now() - t0) / 1000)} s`;
  } catch (err) {
    results.dataset.state = "error";
    $("compare-status").textContent = "";
    showError(err.message);
  } finally {
    $("compare-run").disabled = false;
  }
}
