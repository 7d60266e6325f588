"""A tiny DiT with Wan2.1's ``WanModel.forward`` contract, written for the tests.

Contract mirrored from Wan2.1 (wan/modules/model.py): ``forward(x, t, context, seq_len,
clip_fea=None, y=None)`` where ``x``, ``context`` and ``y`` are lists of unbatched
tensors ([C, F, H, W] and [L, C]), ``t`` is [B], and the result is a list of fp32
[C_out, F, H, W]. ``y`` (i2v/flf2v) is concatenated to ``x`` on channels; ``clip_fea``
adds image tokens to the text context. The computation is a real transformer (3D patch
embedding, time-modulated blocks with self- and cross-attention, head, unpatchify), so
outputs depend on every input; only the sizes are tiny.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoidal_embedding_1d(dim, position):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = position.double()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


def attention(q, k, v):
    """[B, L, N, D] queries against [B, S, N, D] keys/values."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


class SelfAttention(nn.Module):
    """Sequence parallel replaces this module's forward on the instance (as Wan2.1 does)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = (-1, -1)  # Wan2.1's attribute (no sliding window): what usp_attn_forward passes on
        self.qkv = nn.Linear(dim, 3 * dim)
        self.o = nn.Linear(dim, dim)

    def heads(self, x):
        return x.unflatten(-1, (self.num_heads, -1))

    def forward(self, x, seq_lens, grid_sizes, freqs):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.o(attention(self.heads(q), self.heads(k), self.heads(v)).flatten(2))


class Block(nn.Module):
    """Called as Wan2.1's blocks are: ``block(x, e=e0, seq_lens=..., grid_sizes=..., freqs=...,
    context=..., context_lens=...)``."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_q = nn.Linear(dim, dim)
        self.cross_kv = nn.Linear(dim, 2 * dim)
        self.cross_o = nn.Linear(dim, dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(approximate="tanh"), nn.Linear(2 * dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def heads(self, x):
        return x.unflatten(-1, (self.num_heads, -1))

    def forward(self, x, e, seq_lens, grid_sizes, freqs, context, context_lens):
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + e).chunk(6, dim=1)
        x = x + gate1 * self.self_attn(self.norm1(x) * (1 + scale1) + shift1, seq_lens, grid_sizes, freqs)
        ck, cv = self.cross_kv(context).chunk(2, dim=-1)
        h = self.norm2(x)
        x = x + self.cross_o(attention(self.heads(self.cross_q(h)), self.heads(ck), self.heads(cv)).flatten(2))
        h = self.norm3(x) * (1 + scale2) + shift2
        return x + gate2 * self.ffn(h)


class WanModel(nn.Module):

    def __init__(self, model_type="t2v", patch_size=(1, 2, 2), in_dim=4, dim=32, out_dim=4,
                 text_dim=16, freq_dim=32, num_heads=2, num_layers=2, clip_dim=8, vace_dim=0):
        super().__init__()
        assert model_type in ("t2v", "i2v", "flf2v", "vace")
        self.model_type = model_type
        self.patch_size, self.dim, self.out_dim, self.freq_dim = patch_size, dim, out_dim, freq_dim
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=patch_size, stride=patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads) for _ in range(num_layers))
        self.head_norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.head = nn.Linear(dim, out_dim * math.prod(patch_size))
        if model_type in ("i2v", "flf2v"):
            self.img_emb = nn.Linear(clip_dim, dim)
        if model_type == "vace":
            self.vace_patch_embedding = nn.Conv3d(vace_dim, dim, kernel_size=patch_size, stride=patch_size)

    def embed(self, x, t, context, seq_len, clip_fea=None, y=None, vace_context=None, vace_context_scale=1.0):
        """Tokens [B, seq_len, dim] (zero-padded), the time embedding e, and the blocks' kwargs."""
        if y is not None:
            x = [torch.cat([u, v], dim=0) for u, v in zip(x, y)]
        x = [self.patch_embedding(u.unsqueeze(0)) for u in x]
        if vace_context is not None:
            x = [u + vace_context_scale * self.vace_patch_embedding(c.unsqueeze(0)) for u, c in zip(x, vace_context)]
        grid_sizes = torch.stack([torch.tensor(u.shape[2:], dtype=torch.long) for u in x])
        x = [u.flatten(2).transpose(1, 2) for u in x]
        seq_lens = torch.tensor([u.size(1) for u in x], dtype=torch.long)
        assert max(u.size(1) for u in x) <= seq_len
        x = torch.cat([torch.cat([u, u.new_zeros(1, seq_len - u.size(1), u.size(2))], dim=1) for u in x])
        e = self.time_embedding(sinusoidal_embedding_1d(self.freq_dim, t))
        e0 = self.time_projection(e).unflatten(1, (6, self.dim))
        context = self.text_embedding(torch.stack(context))
        if clip_fea is not None:
            context = torch.cat([self.img_emb(clip_fea), context], dim=1)
        kwargs = dict(e=e0, seq_lens=seq_lens, grid_sizes=grid_sizes, freqs=None, context=context, context_lens=None)
        return x, e, kwargs

    def unpatchify(self, x, grid_sizes):
        out = []
        pf, ph, pw = self.patch_size
        for u, (f, h, w) in zip(x, grid_sizes.tolist()):
            u = u[:f * h * w].view(f, h, w, pf, ph, pw, self.out_dim)
            out.append(torch.einsum("fhwpqrc->cfphqwr", u).reshape(self.out_dim, f * pf, h * ph, w * pw))
        return out

    def head_out(self, x, e):
        """Wan2.1's ``self.head(x, e)``: per token, so sequence parallel runs it on its chunk."""
        return self.head(self.head_norm(x) + e[:, None])

    def finish(self, x, e, grid_sizes):
        return [u.float() for u in self.unpatchify(self.head_out(x, e), grid_sizes)]

    def forward(self, x, t, context, seq_len, clip_fea=None, y=None):
        x, e, kwargs = self.embed(x, t, context, seq_len, clip_fea, y)
        for block in self.blocks:
            x = block(x, **kwargs)
        return self.finish(x, e, kwargs["grid_sizes"])


class VaceWanModel(WanModel):
    """Wan2.1's VACE contract: ``forward(x, t, vace_context, context, seq_len,
    vace_context_scale=1.0, clip_fea=None, y=None)``."""

    def __init__(self, vace_dim=8, **kwargs):
        super().__init__(model_type="vace", vace_dim=vace_dim, **kwargs)

    def forward(self, x, t, vace_context, context, seq_len, vace_context_scale=1.0, clip_fea=None, y=None):
        x, e, kwargs = self.embed(
            x, t, context, seq_len, vace_context=vace_context, vace_context_scale=vace_context_scale)
        for block in self.blocks:
            x = block(x, **kwargs)
        return self.finish(x, e, kwargs["grid_sizes"])
