"""The course's ContextUnet, kept for comparison, with its known defects fixed.

Same shape as the well-known course network: 64 features, two down levels, a pooled
bottleneck, and in the up path the context embedding multiplies and the time embedding adds.
Fixed: the shortcut convolution is created in ``__init__`` (the original builds a new, untrained
layer inside ``forward`` on every call); GroupNorm replaces BatchNorm (batch statistics make a
sample depend on the rest of its batch); the time input is normalised ``t / T`` as in the course.
"""

from __future__ import annotations

import torch
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)


class ResidualConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), _norm(c_out), nn.GELU())
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, 1, 1), _norm(c_out), nn.GELU())
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if residual and c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.conv1(x))
        if not self.residual:
            return h
        return (self.shortcut(x) + h) / 1.414  # the course's variance-keeping residual sum


class UnetDown(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(ResidualConvBlock(c_in, c_out), ResidualConvBlock(c_out, c_out), nn.MaxPool2d(2))


class UnetUp(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.model = nn.Sequential(
            nn.ConvTranspose2d(c_in, c_out, 2, 2), ResidualConvBlock(c_out, c_out), ResidualConvBlock(c_out, c_out)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([x, skip], dim=1))


class EmbedFC(nn.Sequential):
    def __init__(self, d_in: int, d_out: int):
        super().__init__(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


class CourseUNet(nn.Module):
    """``model(x_t, t, context) -> eps_hat`` for square images whose side is divisible by 4."""

    def __init__(self, image_size: int = 16, channels: int = 3, context_width: int = 5,
                 features: int = 64, T: int = 500):
        super().__init__()
        n = features
        self.T, self.context_width, self.image_size = T, context_width, image_size
        self.init_conv = ResidualConvBlock(channels, n, residual=True)
        self.down1, self.down2 = UnetDown(n, n), UnetDown(n, 2 * n)
        self.to_vec = nn.Sequential(nn.AvgPool2d(image_size // 4), nn.GELU())
        self.timeembed1, self.timeembed2 = EmbedFC(1, 2 * n), EmbedFC(1, n)
        c = max(context_width, 1)  # an unconditional model still gets a (constant) context path
        self.contextembed1, self.contextembed2 = EmbedFC(c, 2 * n), EmbedFC(c, n)
        self.up0 = nn.Sequential(nn.ConvTranspose2d(2 * n, 2 * n, image_size // 4, image_size // 4),
                                 _norm(2 * n), nn.ReLU())
        self.up1, self.up2 = UnetUp(4 * n, n), UnetUp(2 * n, n)
        self.out = nn.Sequential(nn.Conv2d(2 * n, n, 3, 1, 1), _norm(n), nn.ReLU(), nn.Conv2d(n, channels, 3, 1, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, n = x.shape[0], self.timeembed2[0].out_features
        if context is None or self.context_width == 0:
            context = x.new_zeros(B, max(self.context_width, 1))
        t_in = (t.to(x.dtype) / self.T).view(B, 1)  # the course feeds t/T as one number
        x = self.init_conv(x)
        down1 = self.down1(x)  # [B, n, H/2, W/2]
        down2 = self.down2(down1)  # [B, 2n, H/4, W/4]
        hidden = self.to_vec(down2)  # [B, 2n, 1, 1]
        c_emb1 = self.contextembed1(context.to(x.dtype)).view(B, 2 * n, 1, 1)
        t_emb1 = self.timeembed1(t_in).view(B, 2 * n, 1, 1)
        c_emb2 = self.contextembed2(context.to(x.dtype)).view(B, n, 1, 1)
        t_emb2 = self.timeembed2(t_in).view(B, n, 1, 1)
        up1 = self.up0(hidden)
        up2 = self.up1(c_emb1 * up1 + t_emb1, down2)  # context multiplies, time adds
        up3 = self.up2(c_emb2 * up2 + t_emb2, down1)
        return self.out(torch.cat([up3, x], dim=1))
