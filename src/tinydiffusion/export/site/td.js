// The diffusion math of tinydiffusion, ported line by line from core/schedule.py and core/samplers.py so that the
// page samples as the package does: the schedule (alpha_bar, zero terminal SNR), the trailing time grid, the
// conversion of the network's output (eps, x0 or v) and the ddim, consistency and dpmpp_2m steps. No DOM here:
// node runs this file in the package's tests against the Python code.
//
// Random numbers: each image has its own generator seeded by its seed (xoshiro128** with Box-Muller normals),
// drawn in the order the package draws them (x_T first, then each step's noise). They are not PyTorch's, so an
// equal seed gives a different image here than `tinydiffusion sample`.

// ------------------------------------------------------------------------------------------- schedule
export function alphaBar(spec) {
  // core/schedule.py: linear betas (DDPM, section 4) or the cosine schedule (Nichol & Dhariwal, eq. 17), float64
  const T = spec.T;
  const betas = new Float64Array(T);
  if (spec.kind === "linear") {
    const b0 = spec.beta_start ?? 1e-4, b1 = spec.beta_end ?? 0.02;
    for (let i = 0; i < T; i++) betas[i] = T === 1 ? b0 : b0 + ((b1 - b0) * i) / (T - 1);
  } else if (spec.kind === "cosine") {
    const s = spec.s ?? 0.008;
    const f = (i) => Math.cos((((i / T) + s) / (1 + s)) * Math.PI / 2) ** 2;
    for (let i = 0; i < T; i++) betas[i] = Math.min(1 - f(i + 1) / f(i), 0.999);
  } else {
    throw new Error(`schedule kind ${JSON.stringify(spec.kind)} is not one this page knows (linear, cosine)`);
  }
  const ab = new Float64Array(T);
  let product = 1;
  for (let i = 0; i < T; i++) ab[i] = product *= 1 - betas[i];
  if (spec.zero_terminal_snr) {
    // Lin et al. 2023, Algorithm 1: shift and scale sqrt(alpha_bar) so the last step is pure noise
    const first = Math.sqrt(ab[0]), last = Math.sqrt(ab[T - 1]);
    for (let i = 0; i < T; i++) ab[i] = (((Math.sqrt(ab[i]) - last) * first) / (first - last)) ** 2;
  }
  return ab;
}

export function trailing(T, steps) {
  // Schedule.timesteps(steps, "trailing"): descending, starting at T-1; the sampler appends the clean state -1
  if (!Number.isInteger(steps) || steps < 1 || steps > T) throw new RangeError(`steps=${steps}: expected 1..${T}`);
  return Array.from({ length: steps }, (_, i) => T - 1 - Math.floor((i * T) / steps));
}

const abAt = (ab, t) => (t < 0 ? 1 : ab[t]); // Schedule.ab: the clean state t = -1 has alpha_bar 1

// ------------------------------------------------------------------------------------------- random numbers
export class Gaussian {
  constructor(seed) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed=${seed}: expected an integer >= 0`);
    let a = (seed >>> 0) ^ Math.imul(Math.floor(seed / 4294967296) >>> 0, 0x85ebca6b);
    const splitmix32 = () => {
      a = (a + 0x9e3779b9) | 0;
      let z = a ^ (a >>> 16);
      z = Math.imul(z, 0x21f0aaad);
      z ^= z >>> 15;
      z = Math.imul(z, 0x735a2d97);
      return (z ^ (z >>> 15)) >>> 0;
    };
    this.s = Uint32Array.from([splitmix32(), splitmix32(), splitmix32(), splitmix32()]);
    this.spare = null;
  }

  uint32() { // xoshiro128** (Blackman & Vigna)
    const s = this.s;
    const rotl = (x, k) => (x << k) | (x >>> (32 - k));
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 11);
    return result;
  }

  normal() { // Box-Muller on uniforms in (0, 1), both values used
    if (this.spare !== null) { const z = this.spare; this.spare = null; return z; }
    const u1 = (this.uint32() + 0.5) / 4294967296, u2 = (this.uint32() + 0.5) / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  fill(array) {
    for (let i = 0; i < array.length; i++) array[i] = this.normal();
    return array;
  }
}

// ------------------------------------------------------------------------------------------- one step
export function predict(out, x, ab, prediction) {
  // samplers.predict: (eps_hat, x0_hat) from the network's output, whatever it predicts
  const n = x.length, eps = new Float32Array(n), x0 = new Float32Array(n);
  const a = Math.sqrt(ab), s = Math.sqrt(1 - ab);
  if (prediction === "eps") {
    if (ab === 0) throw new Error("an eps-predicting network says nothing about x0 at zero terminal SNR");
    for (let i = 0; i < n; i++) { eps[i] = out[i]; x0[i] = (x[i] - s * out[i]) / a; }
  } else if (prediction === "x0") {
    for (let i = 0; i < n; i++) { x0[i] = out[i]; eps[i] = (x[i] - a * out[i]) / s; }
  } else if (prediction === "v") { // Salimans & Ho 2022, section 4
    for (let i = 0; i < n; i++) { eps[i] = s * x[i] + a * out[i]; x0[i] = a * x[i] - s * out[i]; }
  } else {
    throw new Error(`prediction ${JSON.stringify(prediction)}: expected eps, x0 or v`);
  }
  return { eps, x0 };
}

const lam = (ab) => (ab <= 0 ? -Infinity : ab >= 1 ? Infinity : 0.5 * Math.log(ab / (1 - ab))); // half log-SNR

export const STEPS = {
  ddim(state, x, p, abT, abPrev) { // Song et al. 2021, eq. 12 with eta = 0
    const a = Math.sqrt(abPrev), d = Math.sqrt(Math.max(1 - abPrev, 0));
    return p.x0.map((v, i) => a * v + d * p.eps[i]);
  },
  consistency(state, x, p, abT, abPrev, tPrev, noise) { // Song et al. 2023, Algorithm 1
    if (tPrev < 0) return p.x0;
    const a = Math.sqrt(abPrev), s = Math.sqrt(1 - abPrev), z = noise();
    return p.x0.map((v, i) => a * v + s * z[i]);
  },
  dpmpp_2m(state, x, p, abT, abPrev, tPrev) { // DPM-Solver++(2M), Lu et al. 2022, Algorithm 2
    const alphaPrev = Math.sqrt(abPrev), sigmaT = Math.sqrt(1 - abT), sigmaPrev = Math.sqrt(1 - abPrev);
    const h = lam(abPrev) - lam(abT);
    const expNegH = (sigmaPrev * Math.sqrt(abT)) / (alphaPrev * sigmaT);
    let D = p.x0;
    if (state.x0Last !== null && tPrev >= 0) {
      const r = state.hLast / h;
      D = p.x0.map((v, i) => (1 + 1 / (2 * r)) * v - (1 / (2 * r)) * state.x0Last[i]);
    }
    state.x0Last = p.x0;
    state.hLast = h;
    return x.map((v, i) => (sigmaPrev / sigmaT) * v + alphaPrev * (1 - expNegH) * D[i]);
  },
};

// ------------------------------------------------------------------------------------------- a whole batch
async function modelOutput(network, x, t, rows, B, s) {
  // guidance.cfg: both halves in one batched call, out_u + scale * (out_c - out_u); a student has it inside
  const D = s.D, P = x.length / B, ts = new Array(B).fill(t);
  const nonNull = rows.some((v) => v !== 0);
  if (!s.guided || s.guidance === 1 || !nonNull) return network(x, ts, rows, B);
  if (s.guidance === 0) return network(x, ts, new Float32Array(B * D), B);
  const x2 = new Float32Array(2 * B * P), c2 = new Float32Array(2 * B * D);
  x2.set(x); x2.set(x, B * P); c2.set(rows, B * D);
  const both = await network(x2, ts.concat(ts), c2, 2 * B);
  const out = new Float32Array(B * P);
  for (let i = 0; i < B * P; i++) out[i] = both[i] + s.guidance * (both[B * P + i] - both[i]);
  return out;
}

export async function sample(network, s, rows, gens) {
  // plans.run + a sampler: image i starts from gens[i]'s first draw; network(x, t[], context, B) -> output
  const B = gens.length, P = s.C * s.H * s.W;
  const x0 = new Float32Array(B * P);
  gens.forEach((g, i) => g.fill(x0.subarray(i * P, (i + 1) * P)));
  const noise = () => {
    const z = new Float32Array(B * P);
    gens.forEach((g, i) => g.fill(z.subarray(i * P, (i + 1) * P)));
    return z;
  };
  const step = STEPS[s.sampler];
  if (!step) throw new Error(`sampler ${JSON.stringify(s.sampler)}: this page runs ${Object.keys(STEPS).join(", ")}`);
  const grid = trailing(s.ab.length, s.steps), state = { x0Last: null, hLast: null };
  let x = x0;
  for (let i = 0; i < grid.length; i++) {
    const t = grid[i], tPrev = i + 1 < grid.length ? grid[i + 1] : -1;
    const out = await modelOutput(network, x, t, rows, B, s);
    const p = predict(out, x, abAt(s.ab, t), s.prediction);
    x = step(state, x, p, abAt(s.ab, t), abAt(s.ab, tPrev), tPrev, noise);
  }
  return x;
}

// ------------------------------------------------------------------------------------------- context, pixels
export function contextRow(c, context) {
  // ContextSpec.parse: a name, "a=1,b=0.6" / "a+b", {name: weight}, or null / "none" for the null context
  const row = new Float32Array(c.width);
  if (context === null || context === undefined || context === "none" || context === "") return row;
  if (c.kind === "none") throw new Error("context: this model is unconditional; give null");
  let weights = context;
  if (typeof context === "string") {
    weights = {};
    for (const term of context.split(/[,+]/)) {
      const [name, w] = term.split("=").map((part) => part.trim());
      weights[name] = w === undefined ? 1 : Number(w);
    }
  }
  if (typeof weights !== "object" || Array.isArray(weights)) {
    throw new TypeError("context: expected a name, a mixture like 'hero=1,item=0.6', {name: weight} or null");
  }
  for (const [name, w] of Object.entries(weights)) {
    const k = c.names.indexOf(name);
    if (k < 0) throw new RangeError(`context: ${JSON.stringify(name)} is not one of ${c.names.join(", ")}`);
    if (!Number.isFinite(w)) throw new RangeError(`context: the weight of ${name} is ${w}; expected a finite number`);
    if (c.vectors) c.vectors[k].forEach((v, j) => { row[j] += w * v; });
    else row[k] = w;
  }
  if (c.vectors) { // text: the network saw unit rows (ContextSpec.mix renormalises the pooled row and each token row)
    const rows = c.rows ?? 1, w = c.width / rows;
    for (let r = 0; r < rows; r++) {
      const part = row.subarray(r * w, (r + 1) * w), norm = Math.hypot(...part);
      part.forEach((v, j) => { part[j] = v / Math.max(norm, 1e-12); }); // padding rows stay zero
    }
  }
  return row;
}

export function toRGBA(x, B, C, H, W) {
  // store/pictures.to_uint8: clip to [-1, 1], scale to 0..255, round; opaque
  return Array.from({ length: B }, (_, b) => {
    const image = new Uint8ClampedArray(H * W * 4);
    for (let p = 0; p < H * W; p++) {
      for (let ch = 0; ch < 3; ch++) {
        const v = x[(b * C + Math.min(ch, C - 1)) * H * W + p];
        image[4 * p + ch] = Math.round((Math.min(Math.max(v, -1), 1) + 1) * 127.5);
      }
      image[4 * p + 3] = 255;
    }
    return image;
  });
}
