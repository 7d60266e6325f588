"""A tiny DiT with Wan2.2's ``WanModel`` contract (wan/modules/model.py upstream), written for the
tests.

Mirrored: ``WanModel(model_type, patch_size, text_len, in_dim, dim, ffn_dim, freq_dim, text_dim,
out_dim, num_heads, num_layers, window_size, qk_norm, cross_attn_norm, eps)`` and
``WanModel.from_pretrained(checkpoint_dir, subfolder=...)``; ``forward(x, t, context, seq_len,
y=None)`` with lists of unbatched tensors in (``x``/``y`` [C, F, H, W], ``context`` [L, C]) and
a list of fp32 [C_out, F, H, W] out; ``y`` (i2v) concatenated to ``x`` on channels; ``t`` of
shape [B] or per token [B, seq_len] (TI2V-5B); the submodules ``patch_embedding``,
``text_embedding``, ``time_embedding`` (e from the sinusoidal embedding of t, per token),
``time_projection`` (e0 = 6 modulation vectors per token), ``blocks`` called as ``block(x, e=e0,
seq_lens=..., grid_sizes=..., freqs=..., context=..., context_lens=None)``, ``head(x, e)`` and
``unpatchify``; ``self.freqs`` (3D rotary angles, a plain attribute, not a buffer); each block's
``self_attn`` with ``forward(x, seq_lens, grid_sizes, freqs)``, which sequence parallel replaces
on the instance. Self-attention is real (SDPA, padding keys masked by ``seq_lens``), with 3D RoPE
and q/k RMS norms, so every output depends on every token; only the sizes are tiny and the
weights random (seeded by the checkpoint subfolder: the same on every rank and in every run,
different per expert).
"""

import math
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['WanModel']


def sinusoidal_embedding_1d(dim, position):
    """[N] positions (any shape, flattened) -> [N, dim] float64: cosines then sines of
    position * 10000^(-k / (dim / 2))."""
    assert dim % 2 == 0
    half = dim // 2
    position = position.to(torch.float64).reshape(-1)
    inverse = torch.exp(torch.arange(half, dtype=torch.float64) * (-math.log(10000.0) / half))
    angles = position[:, None] * inverse.to(position.device)[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def rope_params(max_seq_len, dim, theta=10000):
    """Rotation angles [max_seq_len, dim // 2]: position p, pair k -> p * theta^(-2k / dim)."""
    assert dim % 2 == 0
    inverse = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    return torch.arange(max_seq_len, dtype=torch.float64)[:, None] * inverse[None, :]


def rope_angles(grid_sizes, freqs, length):
    """Per-token angles [B, length, 1, C/2] for the (f, h, w) grids: the pair channels split in
    three (frame, row, column) groups; tokens past f*h*w (padding) get angle 0."""
    pairs = freqs.size(1)
    groups = freqs.split([pairs - 2 * (pairs // 3), pairs // 3, pairs // 3], dim=1)
    out = []
    for f, h, w in grid_sizes.tolist():
        index = torch.stack(torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij"), -1)
        index = index.reshape(-1, 3).to(freqs.device)
        angles = torch.cat([group[index[:, axis]] for axis, group in enumerate(groups)], dim=1)
        angles = torch.cat([angles, angles.new_zeros(max(0, length - angles.size(0)), pairs)])[:length]
        out.append(angles)
    return torch.stack(out)[:, :, None]


def rope_apply(x, grid_sizes, freqs, start=0):
    """Rotate x [B, L, N, D] as the tokens ``start .. start + L`` of the full sequence."""
    angles = rope_angles(grid_sizes, freqs, start + x.size(1))[:, start:]
    cos, sin = angles.cos(), angles.sin()
    pairs = x.to(torch.float64).unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2).float()


def attention(q, k, v, k_lens=None):
    """q [B, Lq, N, D] against k, v [B, Lk, N, D]; keys at or past ``k_lens[b]`` are ignored."""
    mask = None
    if k_lens is not None:
        keep = torch.arange(k.size(1), device=k.device)[None, :] < k_lens.to(k.device)[:, None]
        mask = keep[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2).to(q.dtype),
                                         v.transpose(1, 2).to(q.dtype), attn_mask=mask)
    return out.transpose(1, 2)


class WanRMSNorm(nn.Module):

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class WanLayerNorm(nn.LayerNorm):

    def __init__(self, dim, eps=1e-6, elementwise_affine=False):
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x):
        """Normalised in fp32 (also when the parameters were converted to bf16)."""
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class WanSelfAttention(nn.Module):

    def __init__(self, dim, num_heads, window_size=(-1, -1), qk_norm=True, eps=1e-6):
        super().__init__()
        assert dim % num_heads == 0
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.window_size, self.qk_norm, self.eps = window_size, qk_norm, eps
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()

    def qkv(self, x):
        """[B, L, dim] -> q, k, v as [B, L, num_heads, head_dim]."""
        heads = (self.num_heads, self.head_dim)
        return (self.norm_q(self.q(x)).unflatten(-1, heads), self.norm_k(self.k(x)).unflatten(-1, heads),
                self.v(x).unflatten(-1, heads))

    def forward(self, x, seq_lens, grid_sizes, freqs):
        q, k, v = self.qkv(x)
        out = attention(rope_apply(q, grid_sizes, freqs), rope_apply(k, grid_sizes, freqs), v, k_lens=seq_lens)
        return self.o(out.flatten(2))


class WanCrossAttention(WanSelfAttention):

    def forward(self, x, context, context_lens):
        heads = (self.num_heads, self.head_dim)
        q = self.norm_q(self.q(x)).unflatten(-1, heads)
        k = self.norm_k(self.k(context)).unflatten(-1, heads)
        v = self.v(context).unflatten(-1, heads)
        return self.o(attention(q, k, v, k_lens=context_lens).flatten(2))


class WanAttentionBlock(nn.Module):

    def __init__(self, dim, ffn_dim, num_heads, window_size=(-1, -1), qk_norm=True, cross_attn_norm=False, eps=1e-6):
        super().__init__()
        self.dim, self.ffn_dim, self.num_heads = dim, ffn_dim, num_heads
        self.window_size, self.qk_norm, self.cross_attn_norm, self.eps = window_size, qk_norm, cross_attn_norm, eps
        self.norm1 = WanLayerNorm(dim, eps)
        self.self_attn = WanSelfAttention(dim, num_heads, window_size, qk_norm, eps)
        self.norm3 = WanLayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.cross_attn = WanCrossAttention(dim, num_heads, (-1, -1), qk_norm, eps)
        self.norm2 = WanLayerNorm(dim, eps)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate='tanh'), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x, e, seq_lens, grid_sizes, freqs, context, context_lens):
        """x [B, L, dim]; e [B, L, 6, dim] (per-token modulation: shift, scale, gate for the
        self-attention, then for the feed-forward)."""
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = (self.modulation.unsqueeze(0) + e.float()).unbind(2)
        x = x + gate_a * self.self_attn(self.norm1(x).float() * (1 + scale_a) + shift_a, seq_lens, grid_sizes, freqs)
        x = x + self.cross_attn(self.norm3(x), context, context_lens)
        return x + gate_f * self.ffn(self.norm2(x).float() * (1 + scale_f) + shift_f)


class Head(nn.Module):

    def __init__(self, dim, out_dim, patch_size, eps=1e-6):
        super().__init__()
        self.dim, self.out_dim, self.patch_size, self.eps = dim, out_dim, patch_size, eps
        self.norm = WanLayerNorm(dim, eps)
        self.head = nn.Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x, e):
        """x [B, L, dim], e [B, L, dim] -> [B, L, prod(patch_size) * out_dim]."""
        shift, scale = (self.modulation.unsqueeze(0) + e.float().unsqueeze(2)).unbind(2)
        return self.head(self.norm(x) * (1 + scale) + shift)


class WanModel(nn.Module):

    def __init__(self, model_type='t2v', patch_size=(1, 2, 2), text_len=16, in_dim=16, dim=32, ffn_dim=64,
                 freq_dim=32, text_dim=16, out_dim=16, num_heads=2, num_layers=2, window_size=(-1, -1),
                 qk_norm=True, cross_attn_norm=True, eps=1e-6):
        super().__init__()
        assert model_type in ['t2v', 'i2v', 'ti2v', 's2v']
        self.model_type = model_type
        self.patch_size, self.text_len, self.in_dim, self.dim = tuple(patch_size), text_len, in_dim, dim
        self.ffn_dim, self.freq_dim, self.text_dim, self.out_dim = ffn_dim, freq_dim, text_dim, out_dim
        self.num_heads, self.num_layers, self.window_size = num_heads, num_layers, window_size
        self.qk_norm, self.cross_attn_norm, self.eps = qk_norm, cross_attn_norm, eps

        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=patch_size, stride=patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate='tanh'), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(
            WanAttentionBlock(dim, ffn_dim, num_heads, window_size, qk_norm, cross_attn_norm, eps)
            for _ in range(num_layers))
        self.head = Head(dim, out_dim, patch_size, eps)

        assert dim % num_heads == 0 and (dim // num_heads) % 2 == 0
        d = dim // num_heads
        # rotary angles for (frame, row, column) pair groups; a plain attribute, as upstream keeps it
        self.freqs = torch.cat([rope_params(256, d - 4 * (d // 6)), rope_params(256, 2 * (d // 6)),
                                rope_params(256, 2 * (d // 6))], dim=1)
        # torch's defaults, except that nothing starts at zero (LayerNorm biases): no trivial paths
        with torch.no_grad():
            for parameter in self.parameters():
                if not parameter.any():
                    parameter.normal_(std=0.02)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder=None, **config):
        """The stand-in reads no weights: a model of the given sizes with random weights seeded by
        ``subfolder`` and the model type, so that every rank and every run builds the same model
        and the two experts differ, as loading their checkpoints would."""
        seed = zlib.crc32(f"{subfolder or ''}:{config.get('model_type', 't2v')}".encode())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(**config)

    # the pieces of the forward, shared with the sequence-parallel forward

    def embed_tokens(self, x, seq_len, y=None):
        """Patch-embedded tokens [B, seq_len, dim] (zero padded), seq_lens [B], grid_sizes [B, 3]."""
        if self.model_type == 'i2v':
            assert y is not None
        if y is not None:
            x = [torch.cat([u, v], dim=0) for u, v in zip(x, y)]
        x = [self.patch_embedding(u.unsqueeze(0).to(self.patch_embedding.weight.dtype)) for u in x]
        grid_sizes = torch.stack([torch.tensor(u.shape[2:], dtype=torch.long) for u in x])
        x = [u.flatten(2).transpose(1, 2) for u in x]
        seq_lens = torch.tensor([u.size(1) for u in x], dtype=torch.long)
        assert seq_lens.max() <= seq_len
        x = torch.cat([torch.cat([u, u.new_zeros(1, seq_len - u.size(1), u.size(2))], dim=1) for u in x])
        return x, seq_lens, grid_sizes

    def embed_time(self, t, seq_len):
        """e [B, seq_len, dim] and e0 [B, seq_len, 6, dim] (fp32) from t [B] or [B, seq_len]."""
        if t.dim() == 1:
            t = t.expand(t.size(0), seq_len)
        batch = t.size(0)
        sinusoid = sinusoidal_embedding_1d(self.freq_dim, t.flatten()).unflatten(0, (batch, seq_len)).float()
        e = self.time_embedding(sinusoid.to(self.time_embedding[0].weight.dtype)).float()
        e0 = self.time_projection(e.to(self.time_projection[1].weight.dtype)).float().unflatten(2, (6, self.dim))
        return e, e0

    def embed_context(self, context):
        """Text tokens padded with zeros to ``text_len`` -> [B, text_len, dim]."""
        padded = torch.stack([torch.cat([u, u.new_zeros(self.text_len - u.size(0), u.size(1))]) for u in context])
        return self.text_embedding(padded.to(self.text_embedding[0].weight.dtype))

    def forward(self, x, t, context, seq_len, y=None):
        x, seq_lens, grid_sizes = self.embed_tokens(x, seq_len, y)
        e, e0 = self.embed_time(t, seq_len)
        context = self.embed_context(context)
        kwargs = dict(e=e0, seq_lens=seq_lens, grid_sizes=grid_sizes, freqs=self.freqs, context=context,
                      context_lens=None)
        for block in self.blocks:
            x = block(x, **kwargs)
        x = self.head(x, e)
        return [u.float() for u in self.unpatchify(x, grid_sizes)]

    def unpatchify(self, x, grid_sizes):
        """[B, L, prod(patch) * C_out] -> list of [C_out, F*pf, H*ph, W*pw] (padding dropped)."""
        pf, ph, pw = self.patch_size
        out = []
        for u, (f, h, w) in zip(x, grid_sizes.tolist()):
            u = u[:f * h * w].reshape(f, h, w, pf, ph, pw, self.out_dim)
            out.append(u.permute(6, 0, 3, 1, 4, 2, 5).reshape(self.out_dim, f * pf, h * ph, w * pw))
        return out
