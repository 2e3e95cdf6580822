// tinydiffusion studio: plain ES2020 modules, no build step, no network beyond this server's /api/.
// The entry point: tabs, the model list, and the wiring of every control.
import { $, state, el, api, showError, clearError } from "./util.js";
import { renderModelCard, renderContext, renderSampling, updateContextString, updateEta } from "./controls.js";
import { resetLive, setLiveState, closeStream, generate, cancel, replay } from "./live.js";
import { pausePreview, resumePreview, schedulePreview, stopPreview } from "./instant.js";
import { newSettingRow, renderCompareSettings, updateCompareButtons, runCompare } from "./compare.js";
import { initEdit, resetEdit } from "./edit.js";
import { loadRuns, refreshRun, startRunMonitor, stopRunMonitor } from "./monitor.js";

// ---------- tabs ----------

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    const on = tab.dataset.tab === name;
    tab.classList.toggle("active", on);
    tab.setAttribute("aria-selected", String(on));
  }
  for (const p of ["generate", "edit", "compare", "training"]) $(`panel-${p}`).hidden = p !== name;
  $("controls").classList.toggle("dim", name === "training");
  document.body.dataset.tab = name;
  if (name === "generate") resumePreview(); else pausePreview();
  if (name === "training") startRunMonitor(); else stopRunMonitor();
}

// ---------- models ----------

async function loadModels(rescan = false) {
  try {
    const models = await api("/api/models" + (rescan ? "?rescan=1" : ""));
    state.models = models;
    const select = $("model-select");
    const previous = select.value;
    select.replaceChildren();
    for (const m of models) {
      let label = m.source === "shipped" ? `${m.name} (shipped)` : m.name;
      if (m.available === false) label += " — unavailable";
      select.append(el("option", { value: m.name, text: label }));
    }
    if (!models.length) {
      $("model-card").textContent = "No models found. Train one with `tinydiffusion train --out runs/NAME` and press ↻.";
      return;
    }
    select.value = models.some((m) => m.name === previous) ? previous : models[0].name;
    selectModel(select.value);
  } catch (err) {
    showError(err.message);
  }
}

function selectModel(name) {
  const m = state.models.find((x) => x.name === name);
  stopPreview();
  state.model = m;
  resetLive();
  const student = !!(m && m.distilled);
  document.body.dataset.student = student ? "1" : "0";
  $("hint-generate").hidden = student;
  $("hint-instant").hidden = !student;
  if (!m) return;
  renderModelCard(m);
  if (m.available === false || !m.kind) return;
  renderSampling(m);
  renderContext(m);
  renderCompareSettings(true);
  resetEdit();
  document.body.dataset.model = m.name;
  schedulePreview();  // a student shows a first picture at once
}

// Generate (the button or Ctrl+Enter): the live stream, in place of any instant preview.
function generateNow() {
  stopPreview();
  generate();
}

// ---------- wiring ----------

function init() {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab.dataset.tab));
  $("model-select").addEventListener("change", (e) => selectModel(e.target.value));
  $("rescan").addEventListener("click", () => loadModels(true));
  $("context-none").addEventListener("change", (e) => {
    if (e.target.checked) $("context-all").checked = false;
    updateContextString();
  });
  $("context-all").addEventListener("change", (e) => {
    if (e.target.checked) $("context-none").checked = false;
    updateContextString();
  });
  for (const id of ["prompt", "prompt-to"]) $(id).addEventListener("input", updateContextString);
  $("mix").addEventListener("input", () => { $("mix-out").textContent = Number($("mix").value).toFixed(2); updateContextString(); });
  $("sampler").addEventListener("change", updateEta);
  $("dice").addEventListener("click", () => { $("seed").value = String(Math.floor(Math.random() * 1e6)); schedulePreview(); });
  // a student's instant preview follows the context (see controls.updateContextString) and these
  document.addEventListener("contextchange", schedulePreview);
  for (const id of ["steps-choice", "seed", "n"]) $(id).addEventListener("change", schedulePreview);
  $("generate").addEventListener("click", generateNow);
  $("cancel").addEventListener("click", cancel);
  $("replay").addEventListener("click", replay);
  $("error-close").addEventListener("click", clearError);
  $("compare-add").addEventListener("click", () => {
    const box = $("compare-settings");
    if (box.children.length < 4) box.append(newSettingRow());
    updateCompareButtons();
  });
  $("compare-run").addEventListener("click", runCompare);
  $("run-select").addEventListener("change", refreshRun);
  $("run-refresh").addEventListener("click", loadRuns);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("generate").disabled) generateNow();
  });
  window.addEventListener("beforeunload", () => { stopPreview(); closeStream(); });
  setLiveState("idle", "ready");
  initEdit();
  loadModels();
}

init();
