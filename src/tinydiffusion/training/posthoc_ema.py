"""Choosing the EMA length after training (post-hoc EMA, Karras et al. 2024, "Analyzing and Improving the Training
Dynamics of Diffusion Models", §3).

A *power-function* EMA averages the raw weights θ(τ) of steps τ ≤ t with weights ∝ τ^γ:
``θ̂_γ(t) ← β θ̂_γ + (1 − β) θ(t)``, ``β = (1 − 1/t)^(γ+1)``. Unlike a fixed decay, its length grows with the run:
its width relative to the run, ``σ_rel = √((γ+1) / ((γ+2)² (γ+3)))``, stays the same at every step, so one run
can be averaged at any length afterwards. Training keeps two of them (``SIGMA_RELS``) and writes snapshots of
both every ``ema_snapshot_every`` steps into ``<run>/ema/``; ``reconstruct`` finds the combination of snapshots
whose averaging profile is closest (least squares over τ) to the profile of any asked-for ``σ_rel`` and returns
those weights. Profiles are compared in continuous time (``profile_dot``): exact enough once snapshots are tens of
steps apart, and the fit's residual is reported so a length the snapshots cannot make is visible.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError, bad_value
from ..store.checkpoint import check_weights, export_weights, read_model, read_weights
from ..store.files import atomic_write

SIGMA_RELS = (0.05, 0.10)  # the two profiles training keeps (EDM2's): every length between can be reconstructed
MAX_SIGMA_REL = 0.28  # γ = 0 (a plain average of the whole run) is σ_rel ≈ 0.289; longer ones do not exist
POOR_FIT = 0.1  # a relative profile residual above this is said: the snapshots make that length only roughly
FOLDER = "ema"  # snapshots: <run>/ema/step_XXXXXXX.safetensors


def gamma(sigma_rel: float) -> float:
    """The exponent γ ≥ 0 of the power-function EMA whose relative width is ``sigma_rel``: the largest root of
    ``σ² (γ+2)² (γ+3) = γ + 1``, i.e. ``σ² γ³ + 7σ² γ² + (16σ² − 1) γ + 12σ² − 1 = 0``."""
    s2 = sigma_rel**2
    roots = np.roots([s2, 7 * s2, 16 * s2 - 1, 12 * s2 - 1])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


def sigma_rel(g: float) -> float:
    """The relative width of the power-function EMA with exponent ``g``."""
    return float(np.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))))


def check_sigma_rel(value, name: str = "sigma_rel") -> float:
    """A relative EMA length in (0, ``MAX_SIGMA_REL``], or a ``UsageError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_SIGMA_REL:
        raise bad_value(name, value, f"a relative EMA length in (0, {MAX_SIGMA_REL}] (e.g. 0.05, 0.1; longer "
                                     f"averages than the whole run do not exist)")
    return float(value)


def profile_dot(t_a: np.ndarray, g_a: np.ndarray, t_b: np.ndarray, g_b: np.ndarray) -> np.ndarray:
    """``∫ p_a(τ) p_b(τ) dτ`` for the averaging profiles ``p(τ) = (γ+1) τ^γ / t^(γ+1)`` on ``[0, t]`` (each
    integrates to 1), broadcast over the arrays. Times should be scaled to at most 1 (no overflow)."""
    m = np.minimum(t_a, t_b)
    return (g_a + 1) * (g_b + 1) / (g_a + g_b + 1) * m ** (g_a + g_b + 1) / (t_a ** (g_a + 1) * t_b ** (g_b + 1))


def coefficients(times, gammas, t_r: float, g_r: float) -> tuple[np.ndarray, float]:
    """``(x, residual)``: the weights of the snapshots (taken at ``times`` with exponents ``gammas``) whose sum of
    profiles is closest to the profile of exponent ``g_r`` at ``t_r``, and the fit's relative L2 residual
    (0: exact; the snapshots cannot make that length when it is large)."""
    scale = max(max(times), t_r)
    t = np.asarray(times, float) / scale
    g = np.asarray(gammas, float)
    A = profile_dot(t[:, None], g[:, None], t[None, :], g[None, :])
    b = profile_dot(t, g, t_r / scale, g_r)
    x = np.linalg.lstsq(A, b, rcond=None)[0]
    target = profile_dot(t_r / scale, g_r, t_r / scale, g_r)
    residual = float(np.sqrt(max(target - 2 * x @ b + x @ A @ x, 0.0) / target))
    return x, residual


class PowerEMAs:
    """The power-function EMAs that training keeps beside its ordinary EMA (one per ``SIGMA_RELS``)."""

    def __init__(self, model: torch.nn.Module, sigma_rels=SIGMA_RELS):
        self.gammas = [gamma(s) for s in sigma_rels]
        self.names = [name for name, _ in model.named_parameters()]
        self.params = [[p.detach().clone() for p in model.parameters()] for _ in self.gammas]

    @torch.no_grad()
    def update(self, model: torch.nn.Module, t: int) -> None:
        """Average in the weights of step ``t`` (1: the first step, which each EMA then equals)."""
        for g, averaged in zip(self.gammas, self.params):
            beta = (1.0 - 1.0 / t) ** (g + 1)
            for e, p in zip(averaged, model.parameters()):
                e.lerp_(p.detach(), 1.0 - beta)

    def state_dict(self) -> dict:
        return {"gammas": list(self.gammas), "params": [list(ps) for ps in self.params]}

    def load_state_dict(self, saved: dict | None) -> None:
        if not isinstance(saved, dict) or [round(g, 9) for g in saved.get("gammas", [])] != [round(g, 9) for g in self.gammas] or \
                any(len(ps) != len(self.names) for ps in saved.get("params", [])):
            raise UsageError("the training state's post-hoc EMA profiles do not fit this run")
        for mine, theirs in zip(self.params, saved["params"]):
            for e, s in zip(mine, theirs):
                e.copy_(s)

    def snapshot(self, run: Path, step: int, model: torch.nn.Module) -> Path:
        """Write both averages at ``step`` (with the model's buffers) as one safetensors file, atomically."""
        from safetensors.torch import save

        tensors = {f"{i}/{name}": p.detach().cpu().contiguous()
                   for i, ps in enumerate(self.params) for name, p in zip(self.names, ps)}
        tensors.update({f"buffer/{name}": b.detach().cpu().contiguous() for name, b in model.named_buffers()})
        meta = {"step": str(step), "gammas": json.dumps(self.gammas)}
        path = Path(run) / FOLDER / f"step_{step:07d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, lambda f: f.write(save(tensors, metadata=meta)))


def snapshots(run: str | Path) -> list[tuple[int, list[float], Path]]:
    """``(step, gammas, file)`` of the run's snapshots, oldest first."""
    from safetensors import safe_open

    folder = Path(run) / FOLDER
    found = []
    for file in sorted(folder.glob("step_*.safetensors")) if folder.is_dir() else []:
        try:
            with safe_open(str(file), "pt") as f:
                meta = f.metadata() or {}
            found.append((int(meta["step"]), [float(g) for g in json.loads(meta["gammas"])], file))
        except Exception as e:  # a foreign or truncated file: name it
            raise UsageError(f"post-hoc EMA snapshot {file} could not be read: {str(e)[:200]}") from None
    if not found:
        raise UsageError(f"run {run} has no post-hoc EMA snapshots in {folder} (train it with "
                         f"--ema-snapshot-every N to keep them)")
    return sorted(found)


def reconstruct(run: str | Path, target: float) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights of the run averaged at relative length ``target`` as of its last snapshot, and
    ``{"sigma_rel", "step", "snapshots", "residual"}``."""
    target = check_sigma_rel(target)
    found = snapshots(run)
    times = [step for step, gs, _ in found for _ in gs]
    gammas = [g for _, gs, _ in found for g in gs]
    t_r = found[-1][0]
    x, residual = coefficients(times, gammas, t_r, gamma(target))
    out: dict[str, torch.Tensor] = {}
    k = 0
    for _, gs, file in found:
        weights = read_weights(file)
        for i in range(len(gs)):
            for key, value in weights.items():
                if key.startswith(f"{i}/"):
                    name = key.split("/", 1)[1]
                    out[name] = out.get(name, 0) + float(x[k]) * value.double()
            k += 1
        out.update({key.split("/", 1)[1]: v for key, v in weights.items() if key.startswith("buffer/")})
    weights = {name: v.float() if v.is_floating_point() else v for name, v in out.items()}
    return weights, {"sigma_rel": target, "step": t_r, "snapshots": len(found), "residual": residual}


def export_length(run: str | Path, target: float, out: str | Path | None = None, *, overwrite: bool = False
                  ) -> tuple[Path, dict]:
    """Export the run's network averaged at relative length ``target`` as a model folder (default
    ``<run>/model-ema-<target>``), its card the run's exported one with ``training.ema`` saying how it was made.
    Returns the folder and ``reconstruct``'s record."""
    run = Path(run)
    target = check_sigma_rel(target)
    if not (run / FOLDER).is_dir() or not (run / "model").is_dir():
        raise bad_value("run", str(run), f"a training run folder holding model/ and {FOLDER}/ (train it with "
                                         f"--ema-snapshot-every N to keep the snapshots)")
    out = Path(out) if out is not None else run / f"model-ema-{target:g}"
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} already holds files; pass --overwrite to replace them, or choose another --out")
    card, exported = read_model(run / "model")  # the run's own export: its card and the weights' layout
    weights, record = reconstruct(run, target)
    check_weights(run / FOLDER, weights, exported)
    card = {**card, "training": {**card.get("training", {}), "ema": {**record, "tracked": list(SIGMA_RELS)}}}
    out.mkdir(parents=True, exist_ok=True)
    export_weights(out, weights, card)
    return out, record
