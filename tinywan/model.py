"""A small DiT in the style of Wan2.1's WanModel, with its forward contract.

``forward(x, t, context, seq_len, clip_fea=None, y=None)``: ``x`` a list of unbatched
latents [C, F, H, W], ``context`` a list of text features [L, C_text], ``t`` of shape [B]
(timesteps in [0, 1000]); returns a list of fp32 [C, F, H, W]. Callers pass everything
after ``x`` by keyword, and the conditional and unconditional predictions are separate
calls, so the Wan2.1 cache adapter wraps this model as it wraps Wan's.

Structure as in Wan2.1: 3D patch embedding, sinusoidal time embedding projected to six
adaLN modulation vectors per block, self-attention with q/k RMSNorm and 3D RoPE,
cross-attention to the text tokens, a modulated feed-forward and a modulated head.
Modulations and the head start at zero (adaLN-Zero), which trains faster at this size.
"""

import math
from typing import List, Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F


def sinusoidal_embedding(dim: int, position: torch.Tensor) -> torch.Tensor:
    half = dim // 2
    freqs = torch.pow(10000, -torch.arange(half, dtype=torch.float64, device=position.device) / half)
    angles = position.double()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


def rope_angles(head_dim: int, grid: Sequence[int], device=None) -> torch.Tensor:
    """[F*H*W, head_dim/2] rotation angles; the pairs are split between time, height and
    width as in Wan2.1 (time gets the remainder)."""
    pairs = head_dim // 2
    split = (pairs - 2 * (pairs // 3), pairs // 3, pairs // 3)
    axes = []
    for n, size in zip(split, grid):
        inv = 1.0 / (10000 ** (torch.arange(n, dtype=torch.float64, device=device) / n))
        axes.append(torch.arange(size, dtype=torch.float64, device=device)[:, None] * inv[None])
    f, h, w = grid
    angles = torch.cat([
        axes[0][:, None, None, :].expand(f, h, w, -1),
        axes[1][None, :, None, :].expand(f, h, w, -1),
        axes[2][None, None, :, :].expand(f, h, w, -1)], dim=-1)
    return angles.reshape(f * h * w, pairs).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, L, D]; cos/sin [B, 1, L, D/2]; rotates consecutive pairs."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps).to(x.dtype) * self.weight


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: Optional[int] = None):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(context_dim or dim, dim)
        self.v = nn.Linear(context_dim or dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q, self.norm_k = RMSNorm(dim), RMSNorm(dim)

    def _split(self, x):
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, source, key_mask, rope=None):
        q = self._split(self.norm_q(self.q(x)))
        k = self._split(self.norm_k(self.k(source)))
        v = self._split(self.v(source))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(out.transpose(1, 2).flatten(2))


class Block(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(dim, heads)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, dim))

    def forward(self, x, e, self_mask, rope, context, context_mask):
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + e).chunk(6, dim=1)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.self_attn(h, h, self_mask, rope)
        x = x + self.cross_attn(self.norm3(x), context, context_mask)
        return x + gate2 * self.ffn(self.norm2(x) * (1 + scale2) + shift2)


class Head(nn.Module):
    def __init__(self, dim: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.head = nn.Linear(dim, out_features)
        self.modulation = nn.Parameter(torch.zeros(1, 2, dim))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x, e):
        shift, scale = (self.modulation + e[:, None]).chunk(2, dim=1)
        return self.head(self.norm(x) * (1 + scale) + shift)


class TinyWanModel(nn.Module):
    def __init__(self, in_dim: int = 8, out_dim: int = 8, patch_size=(2, 2, 2), dim: int = 192,
                 ffn_dim: int = 512, freq_dim: int = 256, text_dim: int = 128, text_len: int = 32,
                 num_heads: int = 6, num_layers: int = 6):
        super().__init__()
        self.config = dict(in_dim=in_dim, out_dim=out_dim, patch_size=tuple(patch_size), dim=dim,
                           ffn_dim=ffn_dim, freq_dim=freq_dim, text_dim=text_dim, text_len=text_len,
                           num_heads=num_heads, num_layers=num_layers)
        self.patch_size, self.dim, self.freq_dim = tuple(patch_size), dim, freq_dim
        self.out_dim, self.text_len, self.num_heads = out_dim, text_len, num_heads
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=patch_size, stride=patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.time_projection[1].weight)
        nn.init.zeros_(self.time_projection[1].bias)
        self.blocks = nn.ModuleList(Block(dim, ffn_dim, num_heads) for _ in range(num_layers))
        self.head = Head(dim, out_dim * math.prod(patch_size))

    def seq_len_for(self, latent_shape: Sequence[int]) -> int:
        """Tokens of one latent [C, F, H, W] (what Wan's pipelines pass as seq_len)."""
        return math.prod(s // p for s, p in zip(latent_shape[1:], self.patch_size))

    def forward(self, x: List[torch.Tensor], t: torch.Tensor, context: List[torch.Tensor],
                seq_len: int, clip_fea=None, y=None) -> List[torch.Tensor]:
        if clip_fea is not None or y is not None:
            raise NotImplementedError("text-to-video only: clip_fea and y must be None")
        device = self.patch_embedding.weight.device
        if all(u.shape == x[0].shape for u in x):  # the usual case: one batched conv
            embedded = self.patch_embedding(torch.stack(list(x)).to(device))
            grids = [tuple(embedded.shape[2:])] * len(x)
            tokens = list(embedded.flatten(2).transpose(1, 2))
        else:
            embedded = [self.patch_embedding(u.unsqueeze(0).to(device)) for u in x]
            grids = [tuple(u.shape[2:]) for u in embedded]
            tokens = [u.flatten(2).transpose(1, 2)[0] for u in embedded]
        lengths = [len(u) for u in tokens]
        if max(lengths) > seq_len:
            raise ValueError(f"seq_len {seq_len} is shorter than the {max(lengths)} tokens of a video")
        batch = len(tokens)
        head_dim = self.dim // self.num_heads
        if all(n == seq_len for n in lengths) and len(set(grids)) == 1:
            hidden = torch.stack(tokens)
            self_mask = None  # nothing padded: lets attention take its fast path
            angles = rope_angles(head_dim, grids[0], device)[None]
        else:  # pad every video to seq_len, as Wan does, and mask the padding
            hidden = tokens[0].new_zeros(batch, seq_len, self.dim)
            self_mask = torch.zeros(batch, seq_len, dtype=torch.bool, device=device)
            angles = torch.zeros(batch, seq_len, head_dim // 2, device=device)
            for i, (u, grid) in enumerate(zip(tokens, grids)):
                hidden[i, :len(u)] = u
                self_mask[i, :len(u)] = True
                angles[i, :len(u)] = rope_angles(head_dim, grid, device)
        dtype = self.patch_embedding.weight.dtype
        rope = (angles.cos()[:, None].to(dtype), angles.sin()[:, None].to(dtype))

        t = t.to(device)
        if t.dim() == 0:
            t = t[None]
        e = self.time_embedding(sinusoidal_embedding(self.freq_dim, t).to(dtype))
        e0 = self.time_projection(e).unflatten(1, (6, self.dim))
        if len(e0) == 1 and batch > 1:
            e0, e = e0.expand(batch, -1, -1), e.expand(batch, -1)

        text = hidden.new_zeros(batch, self.text_len, context[0].shape[-1])
        context_mask = torch.zeros(batch, self.text_len, dtype=torch.bool, device=device)
        for i, c in enumerate(context):
            c = c[:self.text_len]
            text[i, :len(c)] = c
            context_mask[i, :len(c)] = True
        text = self.text_embedding(text)

        for block in self.blocks:
            hidden = block(hidden, e0, self_mask, rope, text, context_mask)
        hidden = self.head(hidden, e)
        return [self._unpatchify(hidden[i, :n], grid) for i, (n, grid) in enumerate(zip(lengths, grids))]

    def _unpatchify(self, u: torch.Tensor, grid) -> torch.Tensor:
        pf, ph, pw = self.patch_size
        f, h, w = grid
        u = u.float().view(f, h, w, pf, ph, pw, self.out_dim)
        return u.permute(6, 0, 3, 1, 4, 2, 5).reshape(self.out_dim, f * pf, h * ph, w * pw)
