// The controls on the left: the model card, the context (class sliders or prompts) and the sampling
// parameters, read as the API's query/body fields.
import { $, state, el, fmtNum, fmtParams, SHORT_NAMES } from "./util.js";

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
    ["recommended", `${SHORT_NAMES[d.sampler] || d.sampler || "DDPM"}, ${d.steps || m.T} steps, guidance ${fmtNum(d.guidance ?? 1)}`],
  ];
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

export function updateContextString() {
  const p = contextParams();
  let text = p.context === undefined ? (state.model && state.model.kind === "class" ? "(every class)" : "(default rows)") : p.context;
  if (p.context_to) text += `  →  ${p.context_to} @ ${fmtNum(p.mix)}`;
  $("context-string").textContent = text;
}

// ---------- sampling parameters ----------

export function updateEta() {
  const ddim = $("sampler").value === "ddim";
  $("eta").disabled = !ddim;
  $("eta-field").classList.toggle("disabled", !ddim);
}

// Raw values go to the server, which validates them like the CLI (its message is shown on error).
export function samplingParams() {
  const p = { model: state.model ? state.model.name : "", ...contextParams() };
  p.sampler = $("sampler").value;
  const num = (id, key) => { const v = $(id).value; if (v !== "") p[key] = Number(v); };
  num("steps", "steps");
  num("guidance", "guidance");
  num("guidance-rescale", "guidance_rescale");
  if (p.sampler === "ddim") num("eta", "eta");
  num("seed", "seed");
  num("n", "n");
  for (const [id, key] of [["steps", "steps"], ["seed", "seed"], ["n", "n"]]) {
    if ($(id).value === "" && $(id).validity.badInput) p[key] = "invalid";
  }
  return p;
}
