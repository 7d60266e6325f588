"""A tiny HYVideoDiffusionTransformer with the real forward contract and structure.

Video tokens (latent patchified by [1, 2, 2]) and text tokens go through double-stream blocks
(``img, txt = block(img, txt, vec, cu_seqlens_q, cu_seqlens_kv, max_seqlen_q, max_seqlen_kv,
freqs_cis)``), are concatenated (video first), and go through single-stream blocks
(``x = block(x, vec, txt_len, ..., (freqs_cos, freqs_sin))``), as in the real forward; joint
attention with 3D RoPE on the video tokens and adaptive modulation (``img_mod``, ``img_norm1``,
``modulation``, ``pre_norm``) from the timestep, the pooled text and (guidance-distilled model)
the embedded guidance. Blocks carry a ``hybrid_seq_parallel_attn`` slot like the real ones:
when the xDiT wrapper fills it (with xfuser's ``xFuserLongContextAttention``), each rank holds a
slice of the video tokens and attention is HunyuanVideo's ``parallel_attention`` (attenion.py).
"""

import math
from typing import Dict, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attenion import parallel_attention

HUNYUAN_VIDEO_CONFIG = {
    "HYVideo-T/2": {"mm_double_blocks_depth": 20, "mm_single_blocks_depth": 40, "rope_dim_list": [16, 56, 56],
                    "hidden_size": 3072, "heads_num": 24, "mlp_width_ratio": 4},
    "HYVideo-T/2-cfgdistill": {"mm_double_blocks_depth": 20, "mm_single_blocks_depth": 40,
                               "rope_dim_list": [16, 56, 56], "hidden_size": 3072, "heads_num": 24,
                               "mlp_width_ratio": 4, "guidance_embed": True},
}


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def apply_rope(x, cos, sin):
    """x: [B, L, heads, head_dim]; cos/sin: [L, head_dim] (pairs interleaved)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (x.float() * cos[None, :, None] + rotated * sin[None, :, None]).to(x.dtype)


def get_cu_seqlens(text_mask, img_len):
    """Flash attention's varlen boundaries: per batch row, the valid tokens (video + unpadded
    text) then the padding."""
    batch, max_len = text_mask.shape[0], text_mask.shape[1] + img_len
    cu_seqlens = torch.zeros(2 * batch + 1, dtype=torch.int32, device=text_mask.device)
    for i, text_len in enumerate(text_mask.sum(dim=1)):
        cu_seqlens[2 * i + 1] = i * max_len + text_len + img_len
        cu_seqlens[2 * i + 2] = (i + 1) * max_len
    return cu_seqlens


def modulate(x, shift=None, scale=None):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class ModulateDiT(nn.Module):
    def __init__(self, hidden_size, factor):
        super().__init__()
        self.act = nn.SiLU()
        self.linear = nn.Linear(hidden_size, factor * hidden_size)

    def forward(self, x):
        return self.linear(self.act(x))


def joint_attention(block, img_q, img_k, img_v, txt_q, txt_k, txt_v, freqs_cis, cu_seqlens_q, cu_seqlens_kv):
    """Video tokens (RoPE) then text tokens attend jointly; padded text keys are masked. Under
    xDiT (``block.hybrid_seq_parallel_attn`` set) each rank holds a slice of the video tokens and
    HunyuanVideo's ``parallel_attention`` runs xfuser's attention over them."""
    if freqs_cis is not None:
        img_q, img_k = apply_rope(img_q, *freqs_cis), apply_rope(img_k, *freqs_cis)
    if block.hybrid_seq_parallel_attn:
        q, k, v = (torch.cat(pair, 1) for pair in ((img_q, txt_q), (img_k, txt_k), (img_v, txt_v)))
        return parallel_attention(block.hybrid_seq_parallel_attn, q, k, v, img_q_len=img_q.shape[1],
                                  img_kv_len=img_k.shape[1], cu_seqlens_q=cu_seqlens_q, cu_seqlens_kv=cu_seqlens_kv)
    b, local_len, txt_len = img_q.shape[0], img_q.shape[1], txt_q.shape[1]
    seq_len = local_len + txt_len
    valid_text = torch.stack([cu_seqlens_q[2 * i + 1] - i * seq_len - local_len for i in range(b)])
    key_mask = torch.cat([torch.ones(b, img_k.shape[1], dtype=torch.bool),
                          torch.arange(txt_len)[None] < valid_text[:, None]], 1)
    q, k, v = (torch.cat(pair, 1).transpose(1, 2) for pair in ((img_q, txt_q), (img_k, txt_k), (img_v, txt_v)))
    attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    return attn.transpose(1, 2).flatten(2)


class MMDoubleStreamBlock(nn.Module):
    """Separate weights for the video and the text stream, joint attention."""

    def __init__(self, hidden, heads, mlp_ratio):
        super().__init__()
        self.heads_num = heads
        for stream in ("img", "txt"):
            setattr(self, f"{stream}_mod", ModulateDiT(hidden, 6))
            setattr(self, f"{stream}_norm1", nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{stream}_attn_qkv", nn.Linear(hidden, 3 * hidden))
            setattr(self, f"{stream}_attn_proj", nn.Linear(hidden, hidden))
            setattr(self, f"{stream}_norm2", nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{stream}_mlp", nn.Sequential(nn.Linear(hidden, mlp_ratio * hidden),
                                                         nn.GELU(approximate="tanh"),
                                                         nn.Linear(mlp_ratio * hidden, hidden)))
        self.hybrid_seq_parallel_attn = None

    def forward(self, img, txt, vec, cu_seqlens_q=None, cu_seqlens_kv=None, max_seqlen_q=None,
                max_seqlen_kv=None, freqs_cis=None):
        streams, qkv = {"img": img, "txt": txt}, {}
        mods = {name: getattr(self, f"{name}_mod")(vec).chunk(6, dim=-1) for name in streams}
        for name, tokens in streams.items():
            shift, scale = mods[name][:2]
            modulated = modulate(getattr(self, f"{name}_norm1")(tokens), shift=shift, scale=scale)
            qkv[name] = getattr(self, f"{name}_attn_qkv")(modulated).unflatten(-1, (3, self.heads_num, -1)).unbind(2)
        attn = joint_attention(self, *qkv["img"], *qkv["txt"], freqs_cis, cu_seqlens_q, cu_seqlens_kv)
        attn = {"img": attn[:, :img.shape[1]], "txt": attn[:, img.shape[1]:]}
        for name in streams:
            _, _, gate1, shift2, scale2, gate2 = mods[name]
            tokens = streams[name] + gate1.unsqueeze(1) * getattr(self, f"{name}_attn_proj")(attn[name])
            mlp_in = modulate(getattr(self, f"{name}_norm2")(tokens), shift=shift2, scale=scale2)
            streams[name] = tokens + gate2.unsqueeze(1) * getattr(self, f"{name}_mlp")(mlp_in)
        return streams["img"], streams["txt"]


class MMSingleStreamBlock(nn.Module):
    """One set of weights over the merged video+text sequence (video first)."""

    def __init__(self, hidden, heads, mlp_ratio):
        super().__init__()
        self.hidden_size, self.heads_num, self.mlp_hidden_dim = hidden, heads, mlp_ratio * hidden
        self.linear1 = nn.Linear(hidden, 3 * hidden + self.mlp_hidden_dim)
        self.linear2 = nn.Linear(hidden + self.mlp_hidden_dim, hidden)
        self.pre_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.modulation = ModulateDiT(hidden, 3)
        self.hybrid_seq_parallel_attn = None

    def forward(self, x, vec, txt_len, cu_seqlens_q=None, cu_seqlens_kv=None, max_seqlen_q=None,
                max_seqlen_kv=None, freqs_cis=None):
        shift, scale, gate = self.modulation(vec).chunk(3, dim=-1)
        qkv, mlp = torch.split(self.linear1(modulate(self.pre_norm(x), shift=shift, scale=scale)),
                               [3 * self.hidden_size, self.mlp_hidden_dim], dim=-1)
        q, k, v = qkv.unflatten(-1, (3, self.heads_num, -1)).unbind(2)
        img_len = x.shape[1] - txt_len
        attn = joint_attention(self, q[:, :img_len], k[:, :img_len], v[:, :img_len], q[:, img_len:],
                               k[:, img_len:], v[:, img_len:], freqs_cis, cu_seqlens_q, cu_seqlens_kv)
        return x + gate.unsqueeze(1) * self.linear2(torch.cat((attn, self.mlp_act(mlp)), 2))


class HYVideoDiffusionTransformer(nn.Module):
    def __init__(self, args, patch_size=(1, 2, 2), in_channels=16, out_channels=None, hidden_size=32,
                 heads_num=2, mlp_width_ratio=2, mm_double_blocks_depth=2, mm_single_blocks_depth=3,
                 rope_dim_list=(4, 6, 6), guidance_embed=False, dtype=None, device=None):
        super().__init__()
        self.patch_size = list(patch_size)
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.hidden_size, self.heads_num = hidden_size, heads_num
        self.rope_dim_list = list(rope_dim_list)
        self.guidance_embed = guidance_embed
        self.config = type("Config", (), {"in_channels": in_channels})()
        patch = math.prod(self.patch_size)
        self.img_in = nn.Linear(in_channels * patch, hidden_size)
        self.txt_in = nn.Linear(args.text_states_dim, hidden_size)
        self.time_in = nn.Linear(64, hidden_size)
        self.vector_in = nn.Linear(args.text_states_dim_2, hidden_size)
        self.guidance_in = nn.Linear(64, hidden_size) if guidance_embed else None
        self.double_blocks = nn.ModuleList(MMDoubleStreamBlock(hidden_size, heads_num, mlp_width_ratio)
                                           for _ in range(mm_double_blocks_depth))
        self.single_blocks = nn.ModuleList(MMSingleStreamBlock(hidden_size, heads_num, mlp_width_ratio)
                                           for _ in range(mm_single_blocks_depth))
        self.final_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.final_layer = nn.Linear(hidden_size, self.out_channels * patch)
        self.to(device=device, dtype=dtype)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text_states: torch.Tensor = None,
        text_mask: torch.Tensor = None,
        text_states_2: Optional[torch.Tensor] = None,
        freqs_cos: Optional[torch.Tensor] = None,
        freqs_sin: Optional[torch.Tensor] = None,
        guidance: torch.Tensor = None,
        return_dict: bool = True,
    ) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        b, c, ot, oh, ow = x.shape
        pt, ph, pw = self.patch_size
        tt, th, tw = ot // pt, oh // ph, ow // pw
        img = x.reshape(b, c, tt, pt, th, ph, tw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, tt * th * tw, -1)
        vec = self.time_in(timestep_embedding(t, 64)) + self.vector_in(text_states_2)
        if self.guidance_embed:
            if guidance is None:
                raise ValueError("Didn't get guidance strength for guidance distilled model.")
            vec = vec + self.guidance_in(timestep_embedding(guidance, 64))
        img, txt = self.img_in(img), self.txt_in(text_states)
        txt_seq_len, img_seq_len = txt.shape[1], img.shape[1]
        cu_seqlens_q = get_cu_seqlens(text_mask, img_seq_len)
        cu_seqlens_kv = cu_seqlens_q
        max_seqlen_q = max_seqlen_kv = img_seq_len + txt_seq_len
        freqs_cis = (freqs_cos, freqs_sin) if freqs_cos is not None else None
        # the real forward's loops: blocks called positionally, the streams merged in between
        for _, block in enumerate(self.double_blocks):
            double_block_args = [img, txt, vec, cu_seqlens_q, cu_seqlens_kv, max_seqlen_q, max_seqlen_kv, freqs_cis]
            img, txt = block(*double_block_args)
        x = torch.cat((img, txt), 1)
        if len(self.single_blocks) > 0:
            for _, block in enumerate(self.single_blocks):
                single_block_args = [x, vec, txt_seq_len, cu_seqlens_q, cu_seqlens_kv, max_seqlen_q, max_seqlen_kv,
                                     (freqs_cos, freqs_sin)]
                x = block(*single_block_args)
        img = x[:, :img_seq_len, ...]
        img = self.final_layer(self.final_norm(img))
        img = img.reshape(b, tt, th, tw, -1, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(
            b, self.out_channels, ot, oh, ow)
        if return_dict:
            return {"x": img}
        return img
