"""MobileSAM's TinyViT image encoder: the one SAM part transformers does not ship.

Parameter names follow the released ``mobile_sam.pt`` so its weights load by name; the
architecture (widths, depths, heads, windows) is read from the checkpoint's shapes.
Prompt encoder and mask decoder come from transformers' ``SamModel``.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TinyViTConfig:
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    merge_strides: tuple[int, ...] = (2, 2, 1)  # MobileSAM keeps 64x64 tokens for the last stage
    out_channels: int = 256

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str) -> TinyViTConfig:
        def count(pattern: str) -> int:
            found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
            return max(found) + 1 if found else 0

        n_layers = count(rf"^{prefix}layers\.(\d+)\.")
        depths = tuple(count(rf"^{prefix}layers\.{i}\.blocks\.(\d+)\.") for i in range(n_layers))
        dims = tuple(
            state[f"{prefix}layers.0.blocks.0.conv3.c.weight"].shape[0]
            if i == 0
            else state[f"{prefix}layers.{i}.blocks.0.attn.proj.weight"].shape[0]
            for i in range(n_layers)
        )
        heads = [1] + [state[f"{prefix}layers.{i}.blocks.0.attn.attention_biases"].shape[0] for i in range(1, n_layers)]
        windows = [7] + [
            math.isqrt(state[f"{prefix}layers.{i}.blocks.0.attn.attention_biases"].shape[1]) for i in range(1, n_layers)
        ]
        mlp_hidden = state[f"{prefix}layers.1.blocks.0.mlp.fc1.weight"].shape[0]
        expand = state[f"{prefix}layers.0.blocks.0.conv1.c.weight"].shape[0] / dims[0]
        local = state[f"{prefix}layers.1.blocks.0.local_conv.c.weight"].shape[-1]
        return cls(
            embed_dims=dims,
            depths=depths,
            num_heads=tuple(heads),
            window_sizes=tuple(windows),
            mlp_ratio=mlp_hidden / dims[1],
            mbconv_expand_ratio=expand,
            local_conv_size=local,
            merge_strides=tuple([2] * (n_layers - 2) + [1]),
            out_channels=state[f"{prefix}neck.0.weight"].shape[0],
        )


class ConvBN(nn.Sequential):
    """Conv without bias followed by BatchNorm (children named ``c`` and ``bn`` as in the release)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(3, dim // 2, 3, 2), nn.GELU(), ConvBN(dim // 2, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    def __init__(self, dim: int, expand: float) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Channels-first in, channels-first out."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return self.conv3(x)


class WindowAttention(nn.Module):
    """Attention inside one window, with a learned bias per (|dy|, |dx|) offset and head."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        cells = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        index = [
            offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in cells for b in cells
        ]
        self.attention_biases = nn.Parameter(torch.zeros(heads, len(offsets)))
        self.register_buffer("bias_index", torch.tensor(index).view(len(cells), len(cells)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, n, self.heads, 3, self.head_dim).unbind(3)
        bias = self.attention_biases[:, self.bias_index].to(x.dtype)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, a depthwise conv, then an MLP; works on ``[B, H, W, C]``."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float, local_conv: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, heads, window)
        self.local_conv = ConvBN(dim, dim, local_conv, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        pad_b, pad_r = (-h) % ws, (-w) % ws
        y = F.pad(x, (0, 0, 0, pad_r, 0, pad_b)) if pad_b or pad_r else x
        ph, pw = h + pad_b, w + pad_r
        windows = y.view(b, ph // ws, ws, pw // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        y = self.attn(windows).view(b, ph // ws, pw // ws, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        x = x + y[:, :h, :w]
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, expand: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, H, W, C]
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x.permute(0, 2, 3, 1)


class AttentionStage(nn.Module):
    def __init__(self, blocks: list[TinyViTBlock], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, H, W, C] -> [B, H', W', C']
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


class LayerNorm2d(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class TinyViTEncoder(nn.Module):
    """``[B, 3, 1024, 1024]`` normalised pixels to ``[B, 256, 64, 64]`` SAM image embeddings."""

    def __init__(self, config: TinyViTConfig) -> None:
        super().__init__()
        self.config = config
        dims = config.embed_dims
        self.patch_embed = PatchEmbed(dims[0])
        layers: list[nn.Module] = []
        for i, depth in enumerate(config.depths):
            last = i == len(config.depths) - 1
            merge = None if last else PatchMerging(dims[i], dims[i + 1], config.merge_strides[i])
            if i == 0:
                layers.append(ConvStage(dims[0], depth, config.mbconv_expand_ratio, merge))
            else:
                blocks = [
                    TinyViTBlock(dims[i], config.num_heads[i], config.window_sizes[i], config.mlp_ratio, config.local_conv_size)
                    for _ in range(depth)
                ]
                layers.append(AttentionStage(blocks, merge))
        self.layers = nn.ModuleList(layers)
        out = config.out_channels
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out, 1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, 3, padding=1, bias=False),
            LayerNorm2d(out),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x.permute(0, 3, 1, 2))
