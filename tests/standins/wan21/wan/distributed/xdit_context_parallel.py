"""Wan2.1's sequence-parallel forwards (wan/distributed/xdit_context_parallel.py) on xDiT's real
engine, bound on the instances by the pipelines as Wan2.1 does
(``block.self_attn.forward = types.MethodType(usp_attn_forward, block.self_attn)`` for every
block, ``self.model.forward = types.MethodType(usp_dit_forward, self.model)``).

Mirrored: ``usp_dit_forward`` embeds the full inputs, keeps its chunk of the token sequence
(``torch.chunk(x, get_sequence_parallel_world_size(), dim=1)[get_sequence_parallel_rank()]``),
runs the blocks, the head, ``get_sp_group().all_gather(x, dim=1)`` and unpatchifies, so every
rank returns the full output; ``usp_attn_forward`` runs
``xFuserLongContextAttention()(None, query=q, key=k, value=v, window_size=self.window_size)``
(xfuser's Ulysses and/or ring attention over yunchang's process groups, as set up by
``initialize_model_parallel``).

Differences, all of the stand-in:
- xfuser is imported on first multi-process use (upstream imports it at the top): a single
  process never pays for it. On a machine without CUDA the test suite's patches that run xDiT
  on CPUs over gloo (tests/xdit_cpu.py) are applied first.
- In one process with no xfuser parallel state (the adapter tests bind ``usp_dit_forward``
  without torchrun) the world size is 1 and attention is the model's own; more than one process
  without xfuser's parallel state, or without xfuser, is an error, never a silent fallback.
- ``q``, ``k``, ``v`` keep their dtype (upstream casts them to bf16 under CUDA autocast; the
  stand-in runs fp32 on a CPU) and there is no RoPE (the tiny DiT has none).
"""

import importlib.util
import os
import sys
import types

import torch
import torch.distributed as dist

from ..modules.model import attention

XFUSER_MISSING = ("sequence parallel (--ulysses_size/--ring_size > 1) needs xDiT: "
                  "pip install xfuser==0.7.0 yunchang==0.6.4")
_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), *[os.pardir] * 4)


def _cpu_patches():
    """Stand-in only: tests/xdit_cpu.py's install(), loaded once under its own name."""
    module = sys.modules.get("xdit_cpu")
    if module is None:
        spec = importlib.util.spec_from_file_location("xdit_cpu", os.path.join(_TESTS, "xdit_cpu.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["xdit_cpu"] = module
        spec.loader.exec_module(module)
    module.install()


def xfuser_distributed():
    """``xfuser.core.distributed`` (what Wan2.1 imports its parallel state from); ImportError with
    what to install when xfuser is missing."""
    try:
        import xfuser  # noqa: F401
    except ImportError as error:
        raise ImportError(XFUSER_MISSING) from error
    if not torch.cuda.is_available():
        _cpu_patches()
    import xfuser.core.distributed
    return xfuser.core.distributed


def _multi_process():
    return dist.is_initialized() and dist.get_world_size() > 1


def _engine():
    """xfuser's parallel state when it is set up; None in one process without it."""
    state = sys.modules.get("xfuser.core.distributed.parallel_state")
    if state is not None and state.model_parallel_is_initialized():
        return xfuser_distributed()
    if _multi_process():
        raise RuntimeError("sequence parallel over several processes needs xfuser's parallel state: "
                           "init_distributed_environment and initialize_model_parallel, as generate.py does")
    return None


def init_parallel_state():
    """Stand-in only, for pipelines built with ``use_usp`` in a process group that generate.py did
    not set up (the tests' hosts): the parallel state ``--ulysses_size <world size>`` gives."""
    if not _multi_process():
        raise RuntimeError("use_usp needs a process group of several ranks (torchrun)")
    xd = xfuser_distributed()
    if not xd.model_parallel_is_initialized():
        xd.init_distributed_environment(rank=dist.get_rank(), world_size=dist.get_world_size())
        xd.initialize_model_parallel(sequence_parallel_degree=dist.get_world_size(), ring_degree=1,
                                     ulysses_degree=dist.get_world_size())


def get_sequence_parallel_world_size():
    engine = _engine()
    return 1 if engine is None else engine.get_sequence_parallel_world_size()


def get_sequence_parallel_rank():
    engine = _engine()
    return 0 if engine is None else engine.get_sequence_parallel_rank()


def get_sp_group():
    engine = _engine()
    return types.SimpleNamespace(all_gather=lambda x, dim: x) if engine is None else engine.get_sp_group()


def usp_attn_forward(self, x, seq_lens, grid_sizes, freqs, dtype=torch.bfloat16):
    b, s, n = *x.shape[:2], self.num_heads
    q, k, v = (u.reshape(b, s, n, -1) for u in self.qkv(x).chunk(3, dim=-1))
    if _engine() is None:
        x = attention(q, k, v)
    else:
        from xfuser.core.long_ctx_attention import xFuserLongContextAttention
        x = xFuserLongContextAttention()(None, query=q, key=k, value=v, window_size=self.window_size)
    return self.o(x.flatten(2))


def usp_dit_forward(self, x, t, context, seq_len, vace_context=None, vace_context_scale=1.0, clip_fea=None, y=None):
    x, e, kwargs = self.embed(
        x, t, context, seq_len, clip_fea, y if self.model_type != "vace" else None,
        vace_context=vace_context, vace_context_scale=vace_context_scale)
    x = torch.chunk(x, get_sequence_parallel_world_size(), dim=1)[get_sequence_parallel_rank()]  # this rank's tokens
    for block in self.blocks:
        x = block(x, **kwargs)
    x = get_sp_group().all_gather(self.head_out(x, e), dim=1)  # every rank returns every token
    return [u.float() for u in self.unpatchify(x, kwargs["grid_sizes"])]
