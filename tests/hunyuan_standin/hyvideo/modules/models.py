"""A tiny HYVideoDiffusionTransformer with the real forward contract.

Video tokens (latent patchified by [1, 2, 2]) and text tokens go through joint attention
blocks with 3D RoPE on the video tokens and adaptive modulation from the timestep, the pooled
text and (guidance-distilled model) the embedded guidance. Blocks carry a
``hybrid_seq_parallel_attn`` slot like the real ones: when the xDiT wrapper fills it, each rank
holds a slice of the video tokens and attention gathers the keys and values of all ranks.
"""

import math
from typing import Dict, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

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


class JointBlock(nn.Module):
    def __init__(self, hidden, heads, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.mod = nn.Linear(hidden, 3 * hidden)
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp_ratio * hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * hidden, hidden))
        self.hybrid_seq_parallel_attn = None

    def forward(self, x, vec, img_len, text_mask, freqs_cis):
        shift, scale, gate = self.mod(F.silu(vec))[:, None].chunk(3, dim=-1)
        h = self.norm1(x) * (1 + scale) + shift
        q, k, v = self.qkv(h).unflatten(-1, (3, self.heads, -1)).unbind(2)
        if freqs_cis is not None:
            q = torch.cat([apply_rope(q[:, :img_len], *freqs_cis), q[:, img_len:]], 1)
            k = torch.cat([apply_rope(k[:, :img_len], *freqs_cis), k[:, img_len:]], 1)
        if self.hybrid_seq_parallel_attn is not None:  # keys/values of every rank's video tokens
            k = torch.cat([self.hybrid_seq_parallel_attn(k[:, :img_len]), k[:, img_len:]], 1)
            v = torch.cat([self.hybrid_seq_parallel_attn(v[:, :img_len]), v[:, img_len:]], 1)
        video_keys = k.shape[1] - text_mask.shape[1]
        key_mask = torch.cat([torch.ones_like(text_mask[:, :1]).expand(-1, video_keys), text_mask], 1).bool()
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              attn_mask=key_mask[:, None, None, :])
        x = x + gate * self.proj(attn.transpose(1, 2).flatten(2))
        return x + self.mlp(self.norm2(x))


class HYVideoDiffusionTransformer(nn.Module):
    def __init__(self, args, patch_size=(1, 2, 2), in_channels=16, out_channels=None, hidden_size=32,
                 heads_num=2, mlp_width_ratio=2, mm_double_blocks_depth=1, mm_single_blocks_depth=1,
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
        self.double_blocks = nn.ModuleList(JointBlock(hidden_size, heads_num, mlp_width_ratio)
                                           for _ in range(mm_double_blocks_depth))
        self.single_blocks = nn.ModuleList(JointBlock(hidden_size, heads_num, mlp_width_ratio)
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
        img_len = img.shape[1]
        freqs_cis = (freqs_cos, freqs_sin) if freqs_cos is not None else None
        hidden = torch.cat([img, txt], 1)
        for block in list(self.double_blocks) + list(self.single_blocks):
            hidden = block(hidden, vec, img_len, text_mask, freqs_cis)
        img = self.final_layer(self.final_norm(hidden[:, :img_len]))
        img = img.reshape(b, tt, th, tw, -1, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(
            b, self.out_channels, ot, oh, ow)
        if return_dict:
            return {"x": img}
        return img
