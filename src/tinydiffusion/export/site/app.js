// The page: loads model.json and model.onnx, runs the network with onnxruntime-web (WebAssembly, vendored under
// vendor/ at export time: nothing is fetched from another origin), and draws a grid as the sliders move.
// window.tdGenerate({context, n, seed}) -> {images: [Uint8ClampedArray RGBA, ...], ms} is the scripting hook.
import * as ort from "./vendor/ort.wasm.bundle.min.js";
import { Gaussian, alphaBar, contextRow, sample, toRGBA } from "./td.js";

const GRID = 8; // images in the page's grid, seeds seed .. seed + 7
const CHUNK = 32; // images per network batch (bounds the WebAssembly memory)
let queue = Promise.resolve(); // one session.run at a time

const ready = (async () => {
  const graph = fetch("model.onnx").then((r) => r.arrayBuffer()); // beside the settings and the WebAssembly
  const config = await (await fetch("model.json")).json();
  ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.wasmPaths = { wasm: new URL(config.ort.wasm, location.href).href };
  const session = await ort.InferenceSession.create(new Uint8Array(await graph), { executionProviders: ["wasm"] });
  performance.mark("td:session"); // the model is ready: what the first tdGenerate waits for
  const m = config;
  const settings = { ab: alphaBar(m.schedule), sampler: m.sampler, steps: m.steps, guidance: m.guidance,
                     guided: m.guided, prediction: m.prediction, C: m.channels, H: m.image_size, W: m.image_size,
                     D: m.context.width };
  const takesContext = session.inputNames.includes("context");
  const network = (x, t, c, B) => {
    const run = queue.then(async () => {
      const feeds = { x_t: new ort.Tensor("float32", x, [B, m.channels, m.image_size, m.image_size]),
                      t: new ort.Tensor("int64", BigInt64Array.from(t, (v) => BigInt(v)), [B]) };
      if (takesContext) feeds.context = new ort.Tensor("float32", c, [B, m.context.width]);
      return (await session.run(feeds)).out.data;
    });
    queue = run.catch(() => {});
    return run;
  };
  return { config, settings, network };
})();

async function tdGenerate({ context = null, n = 1, seed = 0 } = {}) {
  const { config, settings, network } = await ready;
  if (!Number.isInteger(n) || n < 1 || n > 4096) throw new RangeError(`n=${n}: expected an integer in 1..4096`);
  if (!Number.isSafeInteger(seed) || seed < 0 || seed + n - 1 > Number.MAX_SAFE_INTEGER) {
    throw new RangeError(`seed=${seed}: expected an integer >= 0 (seeds seed .. seed + n - 1)`);
  }
  const t0 = performance.now();
  const row = contextRow(config.context, context), D = config.context.width;
  const images = [];
  for (let start = 0; start < n; start += CHUNK) {
    const B = Math.min(CHUNK, n - start);
    const rows = new Float32Array(B * D);
    for (let b = 0; b < B; b++) rows.set(row, b * D);
    const gens = Array.from({ length: B }, (_, b) => new Gaussian(seed + start + b));
    const x = await sample(network, settings, rows, gens);
    images.push(...toRGBA(x, B, settings.C, settings.H, settings.W));
  }
  return { images, ms: performance.now() - t0 };
}
window.tdGenerate = tdGenerate;

// ------------------------------------------------------------------------------------------- the page
const $ = (id) => document.getElementById(id);

function weights(config) {
  const w = {};
  for (const input of document.querySelectorAll("#sliders input")) {
    if (Number(input.value) !== 0) w[input.dataset.name] = Number(input.value);
  }
  return config.context.kind === "none" || Object.keys(w).length === 0 ? null : w;
}

function draw(images, size) {
  const grid = $("grid");
  while (grid.children.length < images.length) {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = size;
    grid.append(canvas);
  }
  images.forEach((pixels, i) => grid.children[i].getContext("2d").putImageData(new ImageData(pixels, size), 0, 0));
}

async function main() {
  const { config } = await ready;
  document.title = `${config.title} · tinydiffusion`;
  $("title").textContent = config.title;
  $("about").textContent = config.description;
  config.context.names.forEach((name, k) => {
    const label = document.createElement("label");
    const input = Object.assign(document.createElement("input"),
                                { type: "range", min: 0, max: 1, step: 0.05, value: k === 0 ? 1 : 0 });
    input.dataset.name = name;
    const value = document.createElement("output");
    value.textContent = input.value;
    input.addEventListener("input", () => { value.textContent = input.value; });
    label.title = name; // long prompts are cut short on the page
    label.append(Object.assign(document.createElement("span"), { textContent: name }), input, value);
    $("sliders").append(label);
  });
  $("settings").textContent = `${config.sampler}, ${config.steps} step${config.steps > 1 ? "s" : ""}` +
    (config.student ? " (distilled student)" : `, guidance ${config.guidance}`);
  let busy = false, again = false;
  const redraw = async () => { // throttled: at most one generation at a time, the latest settings next
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        const seed = Number($("seed").value) || 0;
        const { images, ms } = await tdGenerate({ context: weights(config), n: GRID, seed });
        draw(images, config.image_size);
        $("status").textContent = `${GRID} images in ${ms.toFixed(0)} ms (${(ms / GRID).toFixed(1)} ms each)`;
      } while (again);
    } catch (e) {
      $("status").textContent = `error: ${e.message}`;
    } finally {
      busy = false;
    }
  };
  const live = config.steps <= 4 ? "input" : "change"; // a few-step student redraws as the slider moves
  document.querySelectorAll("#sliders input").forEach((input) => input.addEventListener(live, redraw));
  $("seed").addEventListener("change", redraw);
  $("shuffle").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 1e6); redraw(); });
  await redraw();
  performance.mark("td:drawn");
  document.body.dataset.ready = "true";
}

main().catch((e) => { $("status").textContent = `error: ${e.message}`; });
