"""Sequence-parallel forwards with Wan2.2's names (wan/distributed/sequence_parallel.py upstream),
written for the stand-in. The pipelines bind them on the instances, as upstream does:
``block.self_attn.forward = types.MethodType(sp_attn_forward, block.self_attn)`` for every block
and ``model.forward = types.MethodType(sp_dit_forward, model)``.

``sp_dit_forward`` embeds the full inputs on every rank, keeps this rank's contiguous chunk of the
token sequence (and of the per-token time embeddings e and e0), runs the blocks on it, applies the
head and all-gathers the tokens before unpatchifying, so every rank returns the full output.
``sp_attn_forward`` rotates its queries and keys as positions ``rank * chunk ...`` of the
sequence and attends over the keys and values of all ranks (all-gathered; padding keys masked),
so two ranks compute what one process does, up to float rounding. Upstream exchanges heads with
an all-to-all (Ulysses); the tokens each rank holds and returns are the same.
"""

import torch

from ..modules.model import attention, rope_apply
from .util import gather_forward, get_rank, get_world_size


def sp_dit_forward(self, x, t, context, seq_len, y=None):
    world_size, rank = get_world_size(), get_rank()
    x, seq_lens, grid_sizes = self.embed_tokens(x, seq_len, y)
    e, e0 = self.embed_time(t, seq_len)
    context = self.embed_context(context)

    x = torch.chunk(x, world_size, dim=1)[rank]
    e = torch.chunk(e, world_size, dim=1)[rank]
    e0 = torch.chunk(e0, world_size, dim=1)[rank]

    kwargs = dict(e=e0, seq_lens=seq_lens, grid_sizes=grid_sizes, freqs=self.freqs, context=context,
                  context_lens=None)
    for block in self.blocks:
        x = block(x, **kwargs)
    x = self.head(x, e)
    x = gather_forward(x, dim=1)
    return [u.float() for u in self.unpatchify(x, grid_sizes)]


def sp_attn_forward(self, x, seq_lens, grid_sizes, freqs, dtype=torch.bfloat16):
    chunk = x.size(1)
    start = get_rank() * chunk
    q, k, v = self.qkv(x)
    q = rope_apply(q, grid_sizes, freqs, start=start)
    k = rope_apply(k, grid_sizes, freqs, start=start)
    k, v = gather_forward(k, dim=1), gather_forward(v, dim=1)
    return self.o(attention(q, k, v, k_lens=seq_lens).flatten(2))
