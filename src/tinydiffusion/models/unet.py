"""The default UNet: residual blocks where the context scales and the time shifts.

Each block applies ``h = norm(h) · (1 + s(context)) + b(time)``: the course network's rule
(context embedding multiplies, time embedding adds) applied in every block of both paths.
Self-attention is optional at resolutions of 8×8 and below; the output conv starts at zero so a
fresh model predicts ``eps_hat = 0``.

A context may also carry token rows after its pooled part, ``[pooled (W) | token 1 (W) | … | token L (W)]``
(``context_tokens = L``; all-zero rows are padding). The pooled part feeds the scale as above; with
``cross_attention`` resolutions, blocks there also attend over the token rows (keys and values, padding masked),
as GLIDE, Imagen and SDXL add token attention beside a pooled vector. Without token rows (the null context) a
cross-attention block adds exactly zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with fp32 statistics and output whatever the input's dtype. Under bf16 autocast PyTorch runs
    GroupNorm in bf16, and its CPU kernel is slow, above all on channels-last maps (710 µs a call against 85 µs
    in fp32, `benchmarks/bf16.py --profile`); fp32 statistics are also the accurate ones. The next convolution
    casts back to bf16 under autocast; in fp32 this is plain GroupNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in (torch.bfloat16, torch.float16):  # fp32 (and fp64 in the tests) as it is
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)


def _norm(channels: int) -> nn.GroupNorm:
    return GroupNorm32(math.gcd(8, channels), channels)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps (Vaswani et al. 2017, as used by Ho et al. 2020): ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # [B, half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.scale = nn.Linear(emb_dim, c_out)  # from the context embedding: multiplies
        self.shift = nn.Linear(emb_dim, c_out)  # from the time embedding: adds
        self.norm2, self.dropout = _norm(c_out), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, c_emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale = self.scale(c_emb)[:, :, None, None]  # [B, C, 1, 1]
        shift = self.shift(t_emb)[:, :, None, None]
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.heads = heads if channels % heads == 0 else 1
        self.norm, self.qkv = _norm(channels), nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        # softmax(q kᵀ / √d) v written out: at 16–64 tokens two batched products beat the fused kernel, which on a
        # CPU takes a slow path in bf16 and on channels-last inputs (1 ms a call against 0.4 ms, benchmarks/bf16.py);
        # the softmax in fp32 keeps the weights accurate under autocast
        w = torch.softmax((q @ k.transpose(-1, -2)).float() * (C // self.heads) ** -0.5, dim=-1).to(v.dtype)
        h = w @ v  # [B, heads, HW, C/heads]
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class CrossAttention(nn.Module):
    """Each pixel attends over the context's token rows: ``x + proj(softmax(q kᵀ / √d) v)`` with queries from the
    image and keys/values from the (projected) tokens. Padding rows are masked; for an image with no token at all
    (the null context) the block adds exactly zero (no value reaches it, no output bias, no NaN). The output
    projection starts at zero, so a fresh block changes nothing."""

    def __init__(self, channels: int, key_width: int, heads: int = 4):
        super().__init__()
        self.heads = heads if channels % heads == 0 else 1
        self.norm, self.q = _norm(channels), nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(key_width, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape  # keys [B, L, key_width]; mask [B, L], True where a row is a token
        d = C // self.heads
        q = self.q(self.norm(x)).reshape(B, self.heads, d, H * W)
        k, v = self.kv(keys).reshape(B, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)  # [B, heads, L, d] each
        keep = mask[:, None, :, None]  # [B, 1, L, 1]
        # Weights laid out [B, heads, L, HW], normalised over the L keys: a CPU softmax over a short last axis is
        # 40× slower (17 ms against 0.4 ms at 64 × 16×16 pixels and 8 keys). In fp32 as in Attention. A masked key
        # gets the lowest finite logit, so its weight underflows to exactly 0 beside any real key; an image with no
        # key at all gets uniform weights, finite, over values that are all zero (masked values are zeroed)
        logits = ((k * d ** -0.5) @ q).float()
        w = torch.softmax(logits.masked_fill(~keep, torch.finfo(torch.float32).min), dim=-2)
        v = v * keep
        h = v.transpose(-1, -2) @ w.to(v.dtype)  # [B, heads, d, HW]
        return x + self.proj(h.reshape(B, C, H, W))


class Level(nn.Module):
    """``blocks`` residual blocks at one resolution, each optionally followed by attention, then cross-attention."""

    def __init__(self, c_ins: list[int], c_out: int, emb_dim: int, attention: bool, dropout: float,
                 cross: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, c_out, emb_dim, dropout) for c in c_ins)
        self.attn = nn.ModuleList(Attention(c_out) if attention else nn.Identity() for _ in c_ins)
        # None without cross-attention: a pooled-only network has exactly the parameters (and names) it always had
        self.cross = nn.ModuleList(CrossAttention(c_out, emb_dim) for _ in c_ins) if cross else None

    def forward(self, j: int, h: torch.Tensor, t_emb: torch.Tensor, c_emb: torch.Tensor, keys) -> torch.Tensor:
        """Block ``j``: residual block, attention, and cross-attention over ``keys`` = (rows, mask) if any."""
        h = self.attn[j](self.blocks[j](h, t_emb, c_emb))
        return h if self.cross is None or keys is None else self.cross[j](h, *keys)


class UNet(nn.Module):
    """``model(x_t, t, context) -> eps_hat`` for images whose sides are divisible by ``2**(len(mults)-1)``.

    ``context_tokens = L``: the context is ``[pooled | L token rows]`` of ``context_width / (1 + L)`` each; only the
    pooled part feeds the scale, the token rows are the keys of the ``cross_attention`` blocks (if any)."""

    def __init__(self, image_size: int = 16, channels: int = 3, context_width: int = 5, base: int = 32,
                 mults: tuple[int, ...] = (1, 2, 2), blocks: int = 1, attention: tuple[int, ...] = (),
                 dropout: float = 0.0, context_tokens: int = 0, cross_attention: tuple[int, ...] = ()):
        super().__init__()
        if context_width % (1 + context_tokens) or (cross_attention and not context_tokens):
            raise ValueError(f"context width {context_width} with {context_tokens} token rows and cross-attention "
                             f"at {cross_attention}: the width must split into 1 + tokens rows, and cross-attention "
                             f"needs token rows")
        self.context_width, self.image_size, self.levels = context_width, image_size, len(mults) - 1
        self.context_tokens, self.pooled_width = context_tokens, context_width // (1 + context_tokens)
        emb = 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.context_mlp = nn.Sequential(nn.Linear(max(self.pooled_width, 1), emb), nn.SiLU(), nn.Linear(emb, emb))
        # the token rows, projected once for the keys and values of every cross-attention block
        self.token_mlp = nn.Sequential(nn.Linear(self.pooled_width, emb), nn.SiLU(), nn.Linear(emb, emb)) \
            if cross_attention else None
        self.base, self.stem = base, nn.Conv2d(channels, base, 3, padding=1)
        widths = [base * m for m in mults]
        sizes = [image_size // 2**i for i in range(len(mults))]
        self.down, self.downsample, skips, c = nn.ModuleList(), nn.ModuleList(), [base], base
        for i, (w, s) in enumerate(zip(widths, sizes)):
            self.down.append(Level([c] + [w] * (blocks - 1), w, emb, s in attention, dropout, s in cross_attention))
            skips += [w] * blocks
            c = w
            if i < self.levels:
                self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
                skips.append(w)
        self.mid = Level([c, c], c, emb, attention=bool(attention), dropout=dropout, cross=bool(cross_attention))
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, (w, s) in reversed(list(enumerate(zip(widths, sizes)))):
            c_ins = []
            for _ in range(blocks + 1):
                c_ins.append(c + skips.pop())
                c = w
            self.up.append(Level(c_ins, w, emb, s in attention, dropout, s in cross_attention))
            if i > 0:
                self.upsample.append(nn.Conv2d(w, w, 3, padding=1))
        self.out_norm, self.out = _norm(c), nn.Conv2d(c, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, _, H, W = x.shape
        if H % 2**self.levels or W % 2**self.levels:
            raise ValueError(f"image size {H}x{W} is not divisible by 2**{self.levels}={2**self.levels}")
        if context is None or self.context_width == 0:
            context = x.new_zeros(B, max(self.context_width, 1))
        pooled, keys = self.split_context(context, x.dtype)
        t_emb = self.time_mlp(timestep_embedding(t, self.base).to(x.dtype))
        c_emb = self.context_mlp(pooled.to(x.dtype))
        h = self.stem(x)
        hs = [h]
        for i, level in enumerate(self.down):
            for j in range(len(level.blocks)):
                h = level(j, h, t_emb, c_emb, keys)
                hs.append(h)
            if i < self.levels:
                h = self.downsample[i](h)
                hs.append(h)
        for j in range(len(self.mid.blocks)):
            h = self.mid(j, h, t_emb, c_emb, keys)
        for i, level in enumerate(self.up):
            for j in range(len(level.blocks)):
                h = level(j, torch.cat([h, hs.pop()], dim=1), t_emb, c_emb, keys)
            if i < self.levels:
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))

    def split_context(self, context: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, tuple | None]:
        """The pooled part ``[B, W]`` of the context, and the cross-attention keys: the token rows projected,
        ``[B, L, emb]``, with their mask ``[B, L]`` (True: a token, not all-zero padding); None without
        cross-attention (a tokens model without it reads its pooled part only)."""
        if not self.context_tokens:
            return context, None
        pooled, tokens = context[:, :self.pooled_width], context[:, self.pooled_width:]
        if self.token_mlp is None:
            return pooled, None
        tokens = tokens.reshape(-1, self.context_tokens, self.pooled_width)  # -1: a traced batch stays free
        return pooled, (self.token_mlp(tokens.to(dtype)), tokens.ne(0).any(dim=-1))
