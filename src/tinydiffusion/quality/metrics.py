"""Sample-quality metrics over feature tensors ``[N, D]``: pure functions, float64 on the CPU.

Features come from any embedding (an Inception network, the project's evaluator classifier, raw
pixels); nothing here knows about models or images. Bad input raises ``UsageError`` naming the
parameter, its value (or shape) and what is allowed. No dependency beyond torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import torch

from ..errors import UsageError, bad_value

# Largest pairwise-distance block held at once (float64 elements, 64 MiB): 10k × 10k runs in ~12 blocks.
_BLOCK = 1 << 23


def _bad_shape(name: str, x: torch.Tensor, allowed: str) -> UsageError:
    return UsageError(f"{name} of shape {list(x.shape)} is not allowed: expected {allowed}")


def _checked(name: str, x, *, allowed: str, ndim: int, min_rows: int = 0,
             shape: tuple[int | None, ...] | None = None) -> torch.Tensor:
    """``x`` as a finite float64 CPU tensor with ``ndim`` dims, at least ``min_rows`` rows and, where
    ``shape`` gives a size (not None), exactly that size; ``allowed`` describes all of it."""
    if not isinstance(x, torch.Tensor):
        raise bad_value(name, type(x).__name__, f"a torch tensor: {allowed}")
    if x.dim() != ndim or x.shape[0] < min_rows or (
            shape is not None and any(want is not None and got != want for got, want in zip(x.shape, shape))):
        raise _bad_shape(name, x, allowed)
    if x.is_complex() or x.dtype == torch.bool:
        raise bad_value(f"{name}.dtype", x.dtype, "a real (floating point or integer) dtype")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise UsageError(f"{name} contains NaN or infinite values: expected finite numbers")
    return x


def _features(name: str, x, *, min_rows: int = 1, like: tuple[str, int] | None = None) -> torch.Tensor:
    """A feature matrix ``[N, D]`` with ``N >= min_rows``; with ``like = (other, D)`` the same D as ``other``."""
    allowed = f"a 2-D tensor of features [N, D] with N >= {min_rows}"
    if like is not None:
        allowed += f" and D = {like[1]} (the same D as {like[0]})"
    return _checked(name, x, allowed=allowed, ndim=2, min_rows=min_rows,
                    shape=None if like is None else (None, like[1]))


def _int_at_least(name: str, value, low: int, allowed: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise bad_value(name, value, allowed)
    return int(value)


def _distance_blocks(a: torch.Tensor, b: torch.Tensor) -> Iterator[torch.Tensor]:
    """Euclidean distances ``||a_i - b_j||`` in row blocks of ``a``, each ``[c, N_b]``, so memory stays bounded."""
    step = max(1, _BLOCK // max(1, b.shape[0]))
    for start in range(0, a.shape[0], step):
        yield torch.cdist(a[start:start + step], b)  # [c, N_b]


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of the features (the Gaussian fitted in FID)."""
    x = _features("features", features, min_rows=2)
    mu = x.mean(dim=0)  # [D]
    centred = x - mu  # [N, D]
    cov = centred.T @ centred / (x.shape[0] - 1)  # [D, D], Bessel-corrected
    return mu, cov


def _sqrtm_psd(c: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a (numerically) positive semi-definite matrix: ``V diag(sqrt(w)) Vᵀ``."""
    w, v = torch.linalg.eigh(c)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance_from_stats(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2) (Heusel et al. 2017, the FID equation, eq. 6
    of the arXiv version; Dowson & Landau 1982): ``||mu1 - mu2||² + tr(cov1 + cov2 - 2 (cov1 cov2)^{1/2})``,
    clamped at >= 0. Stable without scipy: only symmetric eigendecompositions."""
    mu1 = _checked("mu1", mu1, allowed="a non-empty 1-D mean vector [D]", ndim=1, min_rows=1)
    D = mu1.shape[0]
    square = f"a covariance matrix [{D}, {D}] (D = {D} from mu1)"
    cov1 = _checked("cov1", cov1, allowed=square, ndim=2, shape=(D, D))
    mu2 = _checked("mu2", mu2, allowed=f"a 1-D mean vector [{D}] (D = {D} from mu1)", ndim=1, shape=(D,))
    cov2 = _checked("cov2", cov2, allowed=square, ndim=2, shape=(D, D))
    cov1, cov2 = (cov1 + cov1.T) / 2, (cov2 + cov2.T) / 2  # eigh reads one triangle: symmetrise explicitly
    # tr((cov1 cov2)^{1/2}) = sum of sqrt(eigenvalues of cov1 cov2); AB and BA share their eigenvalues, so with
    # A = sqrt(cov1), B = sqrt(cov1) cov2 they equal those of the symmetric PSD sqrt(cov1) cov2 sqrt(cov1).
    s1 = _sqrtm_psd(cov1)
    m = s1 @ cov2 @ s1  # [D, D]
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    fd = (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * tr_sqrt  # the FID equation
    return max(fd.item(), 0.0)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """FID-style Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017)."""
    a = _features("features_a", features_a, min_rows=2)
    b = _features("features_b", features_b, min_rows=2, like=("features_a", a.shape[1]))
    return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def kid(features_a: torch.Tensor, features_b: torch.Tensor, *, subsets: int = 50, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs", the KID definition): the
    unbiased MMD²_u (Gretton et al. 2012, Lemma 6, eq. 3) with ``k(x, y) = (x·y / D + 1)³``, over ``subsets``
    random subsets of ``min(subset_size, N_a, N_b)`` rows each (without replacement within a subset).
    Returns (mean, population std over subsets), as the reference implementations report it."""
    a = _features("features_a", features_a, min_rows=2)
    b = _features("features_b", features_b, min_rows=2, like=("features_a", a.shape[1]))
    subsets = _int_at_least("subsets", subsets, 1, "an integer >= 1 (50 or 100 is usual)")
    subset_size = _int_at_least("subset_size", subset_size, 2, "an integer >= 2 (1000 is usual)")
    m, D = min(subset_size, a.shape[0], b.shape[0]), a.shape[1]
    mmd2 = torch.empty(subsets, dtype=torch.float64)
    for i in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:m]]  # [m, D]
        y = b[torch.randperm(b.shape[0], generator=generator)[:m]]  # [m, D]
        k_xx, k_yy, k_xy = ((p @ q.T / D + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))  # [m, m] each
        # MMD²_u (Gretton et al. 2012, eq. 3): off-diagonal means of k_xx and k_yy, minus twice the mean of k_xy
        off = m * (m - 1)
        mmd2[i] = ((k_xx.sum() - k_xx.diagonal().sum()) / off + (k_yy.sum() - k_yy.diagonal().sum()) / off
                   - 2 * k_xy.mean())
    return mmd2.mean().item(), mmd2.std(correction=0).item()


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row: the (k+1)-th smallest, the first being itself."""
    return torch.cat([d.kthvalue(k + 1, dim=1).values for d in _distance_blocks(x, x)])  # [N]


def _share_in_balls(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of ``points`` within distance ``radii[j]`` of at least one ``centres[j]``."""
    inside = torch.cat([(d <= radii[None]).any(dim=1) for d in _distance_blocks(points, centres)])  # [N_points]
    return inside.double().mean().item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, Sec. 2): each set's manifold is the union of
    balls reaching from every point to its k-th nearest neighbour, ``f(phi, Phi) = 1`` iff
    ``||phi - phi'|| <= ||phi' - NN_k(phi')||`` for some ``phi'`` in ``Phi``; precision = mean of
    ``f(fake_i, real)``, recall = mean of ``f(real_i, fake)``."""
    k = _int_at_least("k", k, 1, "an integer >= 1 (3 is the paper's choice)")
    real = _features("real", real, min_rows=k + 1)
    fake = _features("fake", fake, min_rows=k + 1, like=("real", real.shape[1]))
    precision = _share_in_balls(fake, real, _knn_radii(real, k))  # mean over fake of f(phi_g, Phi_r)
    recall = _share_in_balls(real, fake, _knn_radii(fake, k))  # mean over real of f(phi_r, Phi_g)
    return precision, recall


def conditional_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of samples that a classifier assigns to the class they were generated for: mean of
    ``argmax(logits) == labels`` (the "discriminability" of class-conditional samples, Odena et al. 2017,
    AC-GAN, Sec. 4.1, measured there with a pretrained Inception classifier)."""
    logits = _checked("logits", logits, allowed="a 2-D tensor of class logits [N, K] with N >= 1", ndim=2, min_rows=1)
    N, K = logits.shape
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != N:
        shape = list(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise bad_value("labels", shape, f"a 1-D tensor of {N} class indices (one per row of logits)")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise bad_value("labels.dtype", labels.dtype, "an integer dtype (class indices)")
    labels = labels.cpu()
    if (labels < 0).any() or (labels >= K).any():
        bad = labels[(labels < 0) | (labels >= K)][0].item()
        raise bad_value("labels", bad, f"class indices in 0..{K - 1} (logits have K = {K} columns)")
    return (logits.argmax(dim=1) == labels).double().mean().item()


def memorisation(samples: torch.Tensor, train: torch.Tensor, *, threshold: float, ratio: float | None = None,
                 neighbours: int = 50) -> dict:
    """Nearest training row for each sample (Euclidean; the copy-detection check of Carlini et al. 2023,
    Sec. 4.1, Def. 1: a sample copies a training image when their distance is below a threshold delta).

    With ``ratio``, a copy must also stand out from the crowd (the normalised distance of their Sec. 5.1):
    the nearest row closer than ``ratio`` × the mean distance to the ``neighbours`` nearest rows. A dark
    sample lies close to every dark training tile, so an absolute threshold alone calls it a copy.
    Returns ``{"share": fraction flagged, "distances": [N] float64, "nearest": [N] long indices into train,
    "relative": [N] nearest distance / mean distance to the nearest ``neighbours``}``."""
    x = _features("samples", samples, min_rows=1)
    tr = _features("train", train, min_rows=1, like=("samples", x.shape[1]))
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold) \
            or threshold < 0:
        raise bad_value("threshold", threshold, "a finite distance >= 0 in feature space")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, numbers.Real)
                              or not 0 < ratio <= 1):
        raise bad_value("ratio", ratio, "a fraction in (0, 1] of the mean distance to the nearest rows, or None")
    n = min(_int_at_least("neighbours", neighbours, 1, "a positive number of nearest rows"), tr.shape[0])
    nearest_n = [d.topk(n, dim=1, largest=False) for d in _distance_blocks(x, tr)]  # ascending, [c, n]
    distances = torch.cat([v.values[:, 0] for v in nearest_n])  # [N]
    nearest = torch.cat([v.indices[:, 0] for v in nearest_n])  # [N]
    crowd = torch.cat([v.values.mean(dim=1) for v in nearest_n])  # [N]
    relative = torch.where(crowd > 0, distances / crowd.clamp_min(1e-300), torch.zeros_like(distances))  # 0/0: a copy
    flagged = distances < threshold
    if ratio is not None:
        flagged &= relative < ratio
    return {"share": flagged.double().mean().item(), "distances": distances, "nearest": nearest,
            "relative": relative}


def nearest_pairs(result: dict, k: int) -> torch.Tensor:
    """Indices ``[k]`` of the k samples closest to their nearest training row, closest first (ties by index)."""
    distances = result.get("distances") if isinstance(result, dict) else None
    if not isinstance(distances, torch.Tensor) or distances.dim() != 1:
        raise bad_value("result", type(result).__name__, "the dict returned by memorisation()")
    k = _int_at_least("k", k, 1, f"an integer in 1..{distances.shape[0]} (the number of samples)")
    if k > distances.shape[0]:
        raise bad_value("k", k, f"an integer in 1..{distances.shape[0]} (the number of samples)")
    return torch.argsort(distances, stable=True)[:k]
