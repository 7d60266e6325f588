"""Sequence-parallel forwards, bound on the instances by the pipelines as Wan2.1 does
(``block.self_attn.forward = types.MethodType(usp_attn_forward, block.self_attn)`` for every
block, ``self.model.forward = types.MethodType(usp_dit_forward, self.model)``).

Each rank takes the full inputs, keeps its chunk of the token sequence, gathers keys and
values from all ranks for self-attention, and all-gathers the output tokens, so every rank
returns the full output, like Wan2.1's xDiT path. Uses torch.distributed directly (gloo on
CPU) where Wan2.1 uses xfuser's groups.
"""

import torch
import torch.distributed as dist

from ..modules.model import attention


def _world():
    return (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)


def _gather_tokens(x):
    world, _ = _world()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=1)


def usp_attn_forward(self, x, seq_lens, grid_sizes, freqs):
    q, k, v = self.qkv(x).chunk(3, dim=-1)
    k, v = _gather_tokens(k), _gather_tokens(v)
    return self.o(attention(self.heads(q), self.heads(k), self.heads(v)).flatten(2))


def usp_dit_forward(self, x, t, context, seq_len, vace_context=None, vace_context_scale=1.0, clip_fea=None, y=None):
    world, rank = _world()
    x, e, kwargs = self.embed(
        x, t, context, seq_len, clip_fea, y if self.model_type != "vace" else None,
        vace_context=vace_context, vace_context_scale=vace_context_scale)
    x = torch.chunk(x, world, dim=1)[rank]
    for block in self.blocks:
        x = block(x, **kwargs)
    x = _gather_tokens(x)
    return self.finish(x, e, kwargs["grid_sizes"])
