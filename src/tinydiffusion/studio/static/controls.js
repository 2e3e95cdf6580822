// The controls on the left: the model card, the context (class sliders or prompts) and the sampling
// parameters, read as the API's query/body fields.
import { $, state, el, fmtNum, fmtParams, plural, InputError, SAMPLER_NAMES, SHORT_NAMES } from "./util.js";

export function renderModelCard(m) {
  const card = $("model-card");
  card.classList.remove("muted");
  card.replaceChildren();
  if (m.available === false || !m.kind) {
    card.append(el("div", { class: "warn", text: m.reason || "This model cannot be loaded here." }));
    return;
  }
  const d = m.defaults || {};
  const what = m.kind === "class"
    ? el("div", { class: "chips" }, ...m.classes.map((c) => el("span", { class: "chip", text: c })))
    : el("span", { text: m.kind === "text" ? "takes prompts" : "unconditional / vector context" });
  const rows = [
    ["context", what],
    ["network", `${m.image_size}×${m.image_size} px · ${fmtParams(m.parameters)} parameters`],
    ["objective", `${m.prediction || "eps"}-prediction · T = ${m.T}`],
    ["recommended", `${SHORT_NAMES[d.sampler] || d.sampler || "DDPM"}, ${plural(d.steps || m.T, "step")}, guidance ${fmtNum(d.guidance ?? 1)}`],
  ];
  if (d.guidance_interval) rows.push(["guidance interval", `(${fmtNum(d.guidance_interval[0])}, ${fmtNum(d.guidance_interval[1])}] of (t+1)/T`]);
  if (d.snap) rows.push(["snap", `prompts moved ${fmtNum(d.snap)} of the way to the nearest of ${m.captions} training captions`]);
  if (d.guide) rows.push(["guide", `${d.guide} (autoguidance${d.guide_scale != null ? ` at ${fmtNum(d.guide_scale)}, beside guidance` : ""})`]);
  const s = m.distilled;
  if (s) {
    rows.push(["student", `${s.method} distillation: ${SHORT_NAMES[s.sampler] || s.sampler} in ${stepCounts(s.steps)}, guidance ${fmtNum(s.guidance)} folded in`]);
    if (s.teacher) rows.push(["teacher", `${s.teacher}${s.teacher_steps ? ` (${SHORT_NAMES[s.teacher_sampler] || s.teacher_sampler || "DDIM"}, ${plural(s.teacher_steps, "step")})` : ""}`]);
  }
  if (m.card && m.card.trained) rows.push(["trained", m.card.trained]);
  const dl = el("dl");
  for (const [k, v] of rows) dl.append(el("dt", { text: k }), el("dd", {}, v));
  card.append(dl);
  if (m.card && m.card.readme) {
    const details = el("details", {}, el("summary", { text: "model README" }), el("pre", { text: m.card.readme }));
    card.append(details);
  }
}

// ---------- context ----------

export function renderContext(m) {
  $("context-class").hidden = m.kind !== "class";
  $("context-text").hidden = m.kind !== "text";
  $("context-vector").hidden = m.kind === "class" || m.kind === "text";
  const examples = $("examples");
  examples.replaceChildren();
  for (const text of (m.kind === "text" && m.examples) || []) {
    const chip = el("button", { class: "chip", type: "button", text, title: "Use this prompt" });
    chip.addEventListener("click", () => { $("prompt").value = text; updateContextString(); });
    examples.append(chip);
  }
  const box = $("class-sliders");
  box.replaceChildren();
  if (m.kind === "class") {
    m.classes.forEach((c, i) => {
      const out = el("output", { id: `out-${c}`, text: i === 0 ? "1" : "0" });
      const input = el("input", {
        type: "range", min: "0", max: "1", step: "0.05", value: i === 0 ? "1" : "0",
        "data-class": c, "data-testid": `slider-${c}`, id: `slider-${c}`, "aria-label": c,
      });
      input.addEventListener("input", () => {
        out.textContent = fmtNum(input.value);
        $("context-none").checked = false;
        $("context-all").checked = false;
        updateContextString();
      });
      box.append(el("label", { class: "slider" }, el("span", { class: "name", text: c }), input, out));
    });
  }
  $("context-none").checked = false;
  $("context-all").checked = false;
  updateContextString();
}

// "every class" and "none" override the sliders: they are dimmed (and say so) while either is ticked.
function dimSliders() {
  const off = $("context-all").checked || $("context-none").checked;
  $("class-sliders").classList.toggle("overridden", off);
  $("class-sliders").title = off ? "Not used: “every class” or “none” is ticked" : "";
}

// The CLI's mixture syntax: "hero=1,item=0.6"; all zero (or the toggle) = "none".
export function classMixture() {
  const parts = [];
  for (const input of document.querySelectorAll("#class-sliders input")) {
    const w = Number(input.value);
    if (w > 0) parts.push(`${input.dataset.class}=${fmtNum(w)}`);
  }
  return parts.length ? parts.join(",") : "none";
}

export function contextParams() {
  const m = state.model;
  if (!m) return {};
  if (m.kind === "class") {
    if ($("context-all").checked) return {};
    if ($("context-none").checked) return { context: "none" };
    return { context: classMixture() };
  }
  if (m.kind === "text") {
    const prompt = $("prompt").value.trim();
    const to = $("prompt-to").value.trim();
    const params = {};
    if (prompt) params.context = prompt;
    if (prompt && to) { params.context_to = to; params.mix = Number($("mix").value); }
    return params;
  }
  return {};
}

// Every change of the context ends here; the "contextchange" event lets the instant preview follow it.
export function updateContextString() {
  dimSliders();
  const p = contextParams();
  let text = p.context === undefined ? (state.model && state.model.kind === "class" ? "(every class)" : "(default rows)") : p.context;
  if (p.context_to) text += `  →  ${p.context_to} @ ${fmtNum(p.mix)}`;
  $("context-string").textContent = text;
  document.dispatchEvent(new Event("contextchange"));
}

// ---------- sampling parameters ----------

// The sampler, steps and guidance fields for a model: every choice for an ordinary model; for a distilled
// student only what it was distilled for (its sampler, its step counts, its guidance scale, fixed: it is
// inside the network), with a note saying so.
export function renderSampling(m) {
  const d = m.defaults || {}, s = m.distilled;
  const sampler = $("sampler");
  const names = s ? [s.sampler] : Object.keys(SAMPLER_NAMES);
  sampler.replaceChildren(...names.map((v) => el("option", { value: v, text: SAMPLER_NAMES[v] || v })));
  sampler.value = s ? s.sampler : d.sampler || "ddpm";
  sampler.disabled = !!s;
  const choice = $("steps-choice");
  choice.replaceChildren(...(s ? s.steps : []).map((k) => el("option", { value: String(k), text: String(k) })));
  $("steps").hidden = !!s;
  choice.hidden = !s;
  $("steps").value = d.steps || m.T || 50;
  $("steps").placeholder = `auto (${d.steps || m.T})`;
  $("steps").max = m.T || "";
  if (s) choice.value = String(s.steps.includes(d.steps) ? d.steps : s.steps[0]);
  $("steps-max").textContent = s ? "" : m.T ? `(1–${m.T})` : "";
  $("guidance").value = s ? s.guidance : d.guidance != null ? d.guidance : 1;
  $("guidance-rescale").value = "0";
  $("eta").value = "0";  // a student has no η; an ordinary model starts deterministic
  $("guidance-lo").value = "";
  $("guidance-hi").value = "";
  const [lo, hi] = d.guidance_interval || [];
  $("guidance-lo").placeholder = lo != null ? `card's: ${fmtNum(lo)}` : "card's: 0";
  $("guidance-hi").placeholder = hi != null ? `card's: ${fmtNum(hi)}` : "card's: 1";
  renderGuides(m, "");
  $("guide-scale").value = "";
  $("guide-scale").placeholder = d.guide_scale != null ? `card's: ${fmtNum(d.guide_scale)}` : "card's";
  $("snap").value = "";
  $("snap").placeholder = `card's: ${fmtNum(d.snap ?? 0)}`;
  $("snap").disabled = !m.captions;  // only a text model that lists its training captions can snap
  $("snap").closest(".field").classList.toggle("disabled", !m.captions);
  for (const id of ["guidance", "guidance-rescale", "guidance-lo", "guidance-hi", "guide", "guide-scale"]) {
    $(id).disabled = !!s;
    $(id).closest(".field").classList.toggle("disabled", !!s);
  }
  const note = $("distilled-note");
  note.hidden = !s;
  note.replaceChildren();
  if (s) {
    note.append(el("b", { text: `distilled: ${stepCounts(s.steps)}, guidance ${fmtNum(s.guidance)} inside` }),
      el("span", { class: "muted", text: " · instant preview: moving the context samples again, also while dragging" }));
  }
  updateEta();
}

// The Guide choices: the model card's, none, or a listed ordinary model (a student cannot guide: its guidance is
// folded in). One of another size or context is listed too: the server says why it does not fit.
export function renderGuides(m = state.model, keep = $("guide").value) {
  if (!m) return;
  const card = (m.defaults || {}).guide;
  const others = state.models.filter((x) => x.name !== m.name && !x.distilled && x.kind && x.available !== false);
  $("guide").replaceChildren(el("option", { value: "", text: card ? `card's (${card})` : "card's (none)" }),
    el("option", { value: "none", text: "none" }), ...others.map((x) => el("option", { value: x.name, text: x.name })));
  $("guide").value = [...$("guide").options].some((o) => o.value === keep) ? keep : "";
}

// "4 steps", "1 step", "2 or 4 steps", "1, 2 or 4 steps"
export function stepCounts(steps) {
  const k = steps.map(String);
  const list = k.length > 1 ? `${k.slice(0, -1).join(", ")} or ${k[k.length - 1]}` : k.join("");
  return `${list} ${k.length === 1 && k[0] === "1" ? "step" : "steps"}`;
}

export function updateEta() {
  const ddim = $("sampler").value === "ddim" && !(state.model && state.model.distilled);
  $("eta").disabled = !ddim;
  $("eta-field").classList.toggle("disabled", !ddim);
}

// Raw values go to the server, which validates them like the CLI (its message is shown on error). An empty
// Steps or Guidance means the model card's (left out); a number field holding what the browser cannot read as a
// number ("3e", "1e400", which it shows but reports as empty) is an InputError, never silently dropped.
// A student's guidance is left out: the server uses its card's, the one folded into it.
const LABELS = { steps: "Steps", guidance: "Guidance", "guidance-rescale": "Rescale", eta: "η", seed: "Seed", n: "Images",
  "guidance-lo": "Guidance interval (from)", "guidance-hi": "Guidance interval (to)", "guide-scale": "Guide scale", snap: "Snap",
  "teach-minutes": "Minutes",
  "teach-report-samples": "Report samples" };

export function readNumber(id) {
  const input = $(id), text = input.value;
  if (text === "" && input.validity.badInput) {
    throw new InputError(id, `${LABELS[id] || id}: what was typed is not a number the page can read (e.g. 3, 7.5 or 1e2); `
      + "fix it or empty the field for the default");
  }
  if (text === "") return undefined;
  const v = Number(text);
  if (!Number.isFinite(v)) throw new InputError(id, `${LABELS[id] || id}: ${text} is not a finite number`);
  return v;
}

export function samplingParams() {
  const m = state.model, student = !!(m && m.distilled);
  const p = { model: m ? m.name : "", ...contextParams() };
  p.sampler = $("sampler").value;
  const num = (id, key) => { const v = student && id === "steps-choice" ? Number($(id).value) : readNumber(id); if (v !== undefined) p[key] = v; };
  num(student ? "steps-choice" : "steps", "steps");
  if (!student) {
    num("guidance", "guidance");
    num("guidance-rescale", "guidance_rescale");
    if (p.sampler === "ddim") num("eta", "eta");
    Object.assign(p, leverParams());
  }
  num("seed", "seed");
  num("n", "n");
  return p;
}

// The guidance levers: both ends of the interval or neither (the card's); the guide when one is chosen.
function leverParams() {
  const p = {}, lo = readNumber("guidance-lo"), hi = readNumber("guidance-hi");
  if ((lo === undefined) !== (hi === undefined)) {
    throw new InputError(lo === undefined ? "guidance-lo" : "guidance-hi",
      "Guidance interval: give both ends (numbers from 0 to 1, from ≤ to), or neither for the model card's");
  }
  if (lo !== undefined) p.guidance_interval = [lo, hi];
  if ($("guide").value) p.guide = $("guide").value;
  const scale = readNumber("guide-scale");
  if (scale !== undefined) p.guide_scale = scale;
  const snap = $("snap").disabled ? undefined : readNumber("snap");
  if (snap !== undefined) p.snap = snap;
  return p;
}
