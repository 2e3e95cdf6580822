// tinydiffusion studio: plain ES2020 modules, no build step, no network beyond this server's /api/.
// The entry point: tabs, the model list, and the wiring of every control.
import { $, state, el, api, showError, clearError, announce } from "./util.js";
import { renderModelCard, renderContext, renderSampling, renderGuides, updateContextString, updateEta } from "./controls.js";
import { resetLive, setLiveState, closeStream, generate, cancel, replay, busy } from "./live.js";
import { pausePreview, resumePreview, schedulePreview, stopPreview } from "./instant.js";
import { newSettingRow, renderCompareSettings, updateCompareButtons, runCompare, cancelCompare } from "./compare.js";
import { initEdit, resetEdit, runEdit, describePlan } from "./edit.js";
import { loadRuns, refreshRun, startRunMonitor, stopRunMonitor } from "./monitor.js";
import { initTeach, refreshTeach, renderTeachBases, startTeach } from "./teach.js";

const TABS = ["generate", "edit", "compare", "training", "teach"];
const ACTIONS = { generate: "generate", edit: "edit-run", compare: "compare-run", training: "run-select", teach: "teach-run" };

// ---------- tabs (the ARIA tabs pattern: one Tab stop, arrow keys move between them) ----------

function showTab(name, focus = false) {
  for (const tab of document.querySelectorAll(".tab")) {
    const on = tab.dataset.tab === name;
    tab.classList.toggle("active", on);
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    if (on && focus) tab.focus();
  }
  for (const p of TABS) $(`panel-${p}`).hidden = p !== name;
  // Generate and Cancel act on the Generate tab only: elsewhere they would run a job out of sight
  $("generate-actions").hidden = name !== "generate";
  document.body.dataset.tab = name;
  if (name === "generate") resumePreview(); else pausePreview();
  if (name === "training") startRunMonitor(); else stopRunMonitor();
  if (name === "edit") describePlan();
  if (name === "teach") refreshTeach();
}

function tabKeys(e) {
  const k = TABS.indexOf(document.body.dataset.tab);
  const next = { ArrowRight: k + 1, ArrowLeft: k - 1, Home: 0, End: TABS.length - 1 }[e.key];
  if (next === undefined) return;
  e.preventDefault();
  showTab(TABS[(next + TABS.length) % TABS.length], true);
}

// ---------- models ----------

async function loadModels(rescan = false) {
  try {
    const models = await api("/api/models" + (rescan ? "?rescan=1" : ""));
    const before = new Set(state.models.map((m) => m.name));
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
    renderTeachBases();
    const added = rescan ? models.filter((m) => !before.has(m.name)).map((m) => m.name) : [];
    if (added.length) announce(`New in the Model list: ${added.join(", ")}.`);
    select.value = models.some((m) => m.name === previous) ? previous : models[0].name;
    if (select.value !== previous || !state.model) selectModel(select.value);
    else { state.model = models.find((m) => m.name === previous); renderModelCard(state.model); renderGuides(); }
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

// Generate (the button or Ctrl+Enter): the live stream, in place of any instant preview. The button stays
// focusable while a job runs (aria-disabled), so a press then does nothing.
function generateNow() {
  if (busy()) return;
  stopPreview();
  generate();
}

// Ctrl+Enter and the skip link: the action of the tab shown.
function runAction() {
  const tab = document.body.dataset.tab;
  if (tab === "generate") generateNow();
  else if (tab === "edit" && !$("edit-run").disabled) runEdit();
  else if (tab === "compare") runCompare();
  else if (tab === "teach") startTeach();
}

// ---------- wiring ----------

function init() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showTab(tab.dataset.tab));
    tab.addEventListener("keydown", tabKeys);
  }
  $("skip").addEventListener("click", (e) => { e.preventDefault(); $(ACTIONS[document.body.dataset.tab]).focus(); });
  $("model-select").addEventListener("change", (e) => selectModel(e.target.value));
  $("rescan").addEventListener("click", () => loadModels(true));
  document.addEventListener("modelschanged", () => loadModels(true));  // the monitor saw a newly exported model
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
  $("cancel").addEventListener("click", () => { cancel(); $("generate").focus(); });
  $("replay").addEventListener("click", replay);
  $("error-close").addEventListener("click", clearError);
  $("compare-add").addEventListener("click", () => {
    const box = $("compare-settings");
    if (box.children.length < 4) box.append(newSettingRow());
    updateCompareButtons();
  });
  $("compare-run").addEventListener("click", runCompare);
  $("compare-cancel").addEventListener("click", () => { cancelCompare(); $("compare-run").focus(); });
  $("run-select").addEventListener("change", refreshRun);
  $("run-refresh").addEventListener("click", loadRuns);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runAction(); }
  });
  window.addEventListener("beforeunload", () => { stopPreview(); closeStream(); });
  setLiveState("idle", "ready");
  showTab("generate");
  initEdit();
  initTeach();
  loadModels();
}

init();
