"""xDiT's real sequence-parallel engine (xfuser 0.7.0 with yunchang 0.6.4's Ulysses and ring
attention) on CPUs, over gloo, for the tests.

xfuser and yunchang are written for GPUs: on a machine without CUDA, xfuser picks nccl, never
sets up yunchang's process groups, and defines its attention layer as a bare ``object``. Six
run-time patches make the same code run on CPUs; nothing else of xfuser or yunchang is changed,
so the Ulysses all-to-alls, the ring's key/value rotation, the joint text tokens and xfuser's
group coordinators are the released ones. ``install()`` applies them once per process (calling
it again does nothing), before anything constructs an ``xFuserLongContextAttention`` or sets up
xfuser's parallel state:

1. ``xfuser.envs._is_cuda`` answers False. It reads ``torch.version.cuda`` (set on every CUDA
   build of torch, GPU or not), and on True ``init_distributed_environment`` calls
   ``torch.cuda.set_device`` and the group coordinators place their tensors on ``cuda:N``.
2. ``xfuser.envs.get_torch_distributed_backend`` answers ``"gloo"``: with CUDA ruled out it
   raises NotImplementedError ("No Accelerators ...") instead of naming a backend, and
   ``initialize_model_parallel`` asks it for the backend of every group it creates.
3. ``HAS_LONG_CTX_ATTN = True`` in ``xfuser.core.distributed.parallel_state`` and
   ``...group_coordinator``. xfuser computes it at import from ``torch.cuda.is_available()``;
   False makes ``initialize_model_parallel`` skip yunchang's ``set_seq_parallel_pg`` (no
   Ulysses or ring process groups) and the sequence-parallel coordinator report Ulysses and
   ring degree 1.
4. ``xfuser.core.long_ctx_attention.hybrid.attn_layer`` and the ``...ring`` modules
   (``ring_flash_attn``, ``ring_npu_flash_attn``, the package) are (re)imported while
   ``torch.cuda.is_available`` answers True, and only then: without CUDA they define
   ``xFuserLongContextAttention`` on ``object`` and ``AttnType = None`` (and the ring module
   fails to import: ``attn_type=AttnType.FA`` as a default argument). The new
   ``xFuserLongContextAttention`` / ``xFuserSanaLinearLongContextAttention`` / ``AttnType`` are
   then rebound wherever an already imported xfuser module re-exports the old ones
   (``xfuser.core``, ``xfuser.core.long_ctx_attention``, ``...hybrid``).
5. ``yunchang.kernels.flash_attn_forward`` (what ``select_flash_attn_impl(AttnType.FA)``, xfuser's
   default, returns) runs ``torch.ops.aten._scaled_dot_product_flash_attention_for_cpu``, which
   returns the attention output and its real log-sum-exp. The ring merges its per-step blocks
   by that LSE; yunchang's own CPU path (``AttnType.TORCH_MATH``) returns LSE = 0, which makes
   ring attention wrong (Ulysses alone would not notice).
6. ``yunchang.ring.utils.update_npu_out``, a stub that raises if called. xfuser 0.5-0.7's
   ``long_ctx_attention/ring/ring_npu_flash_attn.py`` imports it on every machine with CUDA (or
   an NPU), and the ``ring`` package imports that module unconditionally, but no released
   yunchang defines it: ``ImportError: cannot import name 'update_npu_out' from
   'yunchang.ring.utils'``. Only the NPU path would call it.

In fp32 on a CPU, two processes reproduce one: Wan2.1's usp forwards (stand-in and real) bitwise
at Ulysses 2 and within ~5e-6 at ring 2 (the LSE merge reorders the sums); HunyuanVideo's
parallel attention (its text padding attended apart) within ~2e-6 at both.

``parallel_state(ulysses, ring)`` sets up xfuser's parallel state on the default process group.
"""

import importlib
import sys

import torch

_MARK = "_easycache_tests_cpu_patched"
ATTENTION_MODULE = "xfuser.core.long_ctx_attention.hybrid.attn_layer"
RING_MODULES = ("xfuser.core.long_ctx_attention.ring.ring_flash_attn",
                "xfuser.core.long_ctx_attention.ring.ring_npu_flash_attn",
                "xfuser.core.long_ctx_attention.ring")
REEXPORTED = ("xFuserLongContextAttention", "xFuserSanaLinearLongContextAttention", "AttnType")


def cpu_flash_attn_forward(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=None, alibi_slopes=None, return_softmax=False):
    """yunchang's ``flash_attn_forward`` contract on a CPU: q, k, v [b, s, heads, d] ->
    (out [b, s, heads, d], lse [b, heads, s] in fp32)."""
    if tuple(window_size) != (-1, -1) or softcap or alibi_slopes is not None or dropout_p:
        raise NotImplementedError("CPU attention: no sliding window, softcap, ALiBi or dropout")
    if q.shape[1] == 0 or k.shape[1] == 0:  # the CPU kernel aborts the process on an empty sequence
        return q.new_zeros(q.shape[:3] + v.shape[3:]), q.new_full((q.shape[0], q.shape[2], q.shape[1]), float("-inf"),
                                                                   dtype=torch.float32)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0.0, causal, scale=softmax_scale)
    return out.transpose(1, 2), lse.float()


def _update_npu_out(*args, **kwargs):
    raise NotImplementedError("update_npu_out: a stub for xfuser's NPU ring module (tests/xdit_cpu.py)")


def _reimport_with_cuda_reported():
    """Patch 4: the attention modules as they are on a GPU machine, re-exports rebound."""
    import xfuser.core.long_ctx_attention  # noqa: F401  (the package, as xfuser imported it)
    old = {name: getattr(sys.modules[ATTENTION_MODULE], name, None) for name in REEXPORTED}
    real = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    try:
        attention = importlib.reload(sys.modules[ATTENTION_MODULE])
        new = {name: getattr(attention, name) for name in REEXPORTED}
        for module in [m for name, m in list(sys.modules.items()) if name.startswith("xfuser") and m is not None]:
            for name in REEXPORTED:
                if name in vars(module) and vars(module)[name] is old[name] and module is not attention:
                    setattr(module, name, new[name])
        for name in RING_MODULES:  # after the rebinding: they import xFuserLongContextAttention
            if name in sys.modules:
                importlib.reload(sys.modules[name])
            else:
                importlib.import_module(name)
    finally:
        torch.cuda.is_available = real


def install() -> None:
    """Apply the six patches (see the module docstring); idempotent."""
    import xfuser.envs as envs
    if getattr(envs, _MARK, False):
        return
    # yunchang imported with the machine's real answers (its globals probe CUDA kernels)
    import yunchang  # noqa: F401
    import yunchang.comm.all_to_all  # noqa: F401
    import yunchang.kernels
    import yunchang.ring.utils

    envs._is_cuda = lambda: False                                   # 1
    envs.get_torch_distributed_backend = lambda: "gloo"             # 2
    import xfuser.core.distributed.group_coordinator as group_coordinator
    import xfuser.core.distributed.parallel_state as parallel_state
    parallel_state.HAS_LONG_CTX_ATTN = True                         # 3
    group_coordinator.HAS_LONG_CTX_ATTN = True
    yunchang.kernels.flash_attn_forward = cpu_flash_attn_forward    # 5
    if not hasattr(yunchang.ring.utils, "update_npu_out"):
        yunchang.ring.utils.update_npu_out = _update_npu_out        # 6 (before 4 imports the NPU ring module)
    _reimport_with_cuda_reported()                                  # 4
    setattr(envs, _MARK, True)


def parallel_state(ulysses_degree: int, ring_degree: int) -> None:
    """xfuser's parallel state over the default (gloo) process group, set up as Wan2.1's and
    HunyuanVideo's entry points do it; one already set up is torn down first (a test process
    runs several configurations)."""
    import torch.distributed as dist
    from xfuser.core.distributed import parallel_state as state
    install()
    if state.model_parallel_is_initialized():
        state.destroy_model_parallel()
    state.init_distributed_environment(rank=dist.get_rank(), world_size=dist.get_world_size())
    state.initialize_model_parallel(sequence_parallel_degree=dist.get_world_size(), ring_degree=ring_degree,
                                    ulysses_degree=ulysses_degree)
