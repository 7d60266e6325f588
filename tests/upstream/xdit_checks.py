"""The cache under xDiT's real engine (xfuser 0.7.0, yunchang 0.6.4) in a real Wan2.1 or
HunyuanVideo checkout: two CPU processes over gloo (tests/xdit_cpu.py), tiny random-weight DiTs
built by wan21_checks.py / hunyuan_checks.py. Run by tests/upstream/test_xdit_upstream.py in a
subprocess, with an interpreter holding the checkout's requirements plus xfuser and yunchang:

    python tests/upstream/xdit_checks.py wan21|hunyuan /path/to/checkout

Wan2.1: the real ``usp_attn_forward`` / ``usp_dit_forward`` bound on a real WanT2V's model as
WanT2V.__init__ binds them with ``use_usp`` (``sp_size`` from xfuser), attention in fp32 (their
``dtype`` argument; upstream casts q, k, v to bf16 under CUDA autocast). HunyuanVideo: a real
HunyuanVideoSampler built with ``parallel_args``, so its own __init__ runs the real
``parallelize_transformer``; ``parallel_attention``'s flash-attn call for the text padding on
PyTorch (flash-attn needs CUDA), the pipeline's ``cuda:<rank>`` device under a process group
replaced by its execution device (the CPU), guidance 1 (HunyuanVideo's default with its guidance-distilled
model: a batch of 1; upstream cuts every batch row at the first row's text length). xfuser's
parallel state is set up as generate.py / from_pretrained do it, once per configuration (Ulysses
2, then ring 2), in one pair of processes.

For each configuration: cache off is bitwise the uncached two-process run, which is within 1e-5
of one process; EasyCache takes the same decisions on both ranks, computes fewer calls than the
total, and the calls that reached the parallel forward on each rank are the ones reported.
"""

import os
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

torch.set_num_threads(1)
UPSTREAM = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(UPSTREAM)
for path in (UPSTREAM, TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)

CONFIGS = ((2, 1), (1, 2))  # (ulysses, ring)
TOLERANCE = 1e-5


def flash_attn_forward_on_sdpa(q, k, v, dropout_p, softmax_scale, causal, window_size_left=-1,
                               window_size_right=-1, softcap=0.0, alibi_slopes=None, return_softmax=False):
    """flash_attn >= 2.7's ``_flash_attn_forward`` contract ([b, s, heads, d] ->
    (out, lse [b, heads, s], S_dmask, rng_state)) in plain PyTorch (an empty sequence is fine)."""
    scores = (q.transpose(1, 2).float() @ k.transpose(1, 2).float().transpose(-1, -2)) * softmax_scale
    lse = scores.logsumexp(dim=-1)
    out = (scores - lse[..., None]).exp() @ v.transpose(1, 2).float()
    return out.transpose(1, 2).to(q.dtype), lse, None, None


class Wan21:
    steps_per_video = 2  # cond + uncond calls per step

    def __init__(self, checkout):
        import wan21_checks
        self.checks = wan21_checks
        self.gen = wan21_checks.import_upstream(checkout)
        self.script = wan21_checks.load_script()

    def single(self):
        return self.checks.t2v(self.checks.tiny_pipeline(self.gen), "unipc")

    def parallel(self):
        """A tiny real WanT2V with what its __init__ does under ``use_usp``."""
        import functools

        from wan.distributed.xdit_context_parallel import usp_attn_forward, usp_dit_forward
        from xfuser.core.distributed import get_sequence_parallel_world_size
        pipe = self.checks.tiny_pipeline(self.gen)
        attn_forward = functools.partial(usp_attn_forward, dtype=torch.float32)
        for block in pipe.model.blocks:
            block.self_attn.forward = types.MethodType(attn_forward, block.self_attn)
        pipe.model.forward = types.MethodType(usp_dit_forward, pipe.model)
        pipe.sp_size = get_sequence_parallel_world_size()
        return pipe

    def video(self, pipe):
        return self.checks.t2v(pipe, "unipc")

    def dit(self, pipe):
        return pipe.model

    def enable(self, pipe, **kwargs):
        return self.script.enable_easycache(pipe, **kwargs)

    eager = dict(threshold=2.0, warmup_steps=3)


class Hunyuan:
    steps_per_video = 1

    def __init__(self, checkout):
        import hunyuan_checks
        self.checks = hunyuan_checks
        self.sample_video = hunyuan_checks.import_upstream(checkout)
        import hyvideo.diffusion.pipelines.pipeline_hunyuan_video as pipeline_module
        import hyvideo.modules.attenion as attenion
        attenion.flash_attn = types.SimpleNamespace(__version__="2.7.0")
        attenion._flash_attn_forward = flash_attn_forward_on_sdpa
        # the pipeline puts its tensors on cuda:<rank> whenever a process group exists (its only use of
        # torch.distributed): on a CPU, its execution device instead
        pipeline_module.dist = types.SimpleNamespace(is_initialized=lambda: False)
        self.script = hunyuan_checks.load_script()
        self.args = hunyuan_checks.make_args(self.sample_video, self.script)

    def single(self):
        return self.video(self.checks.make_sampler(self.args))

    def parallel(self):
        """A real HunyuanVideoSampler with parallel_args: its __init__ runs parallelize_transformer."""
        from hyvideo.inference import HunyuanVideoSampler
        from xfuser.core.distributed import get_ring_parallel_world_size, get_ulysses_parallel_world_size
        tiny = self.checks.make_sampler(self.args)
        parallel_args = {"ulysses_degree": get_ulysses_parallel_world_size(),
                         "ring_degree": get_ring_parallel_world_size()}
        sampler = HunyuanVideoSampler(args=self.args, vae=tiny.vae, vae_kwargs=tiny.vae_kwargs,
                                      text_encoder=tiny.text_encoder, text_encoder_2=tiny.text_encoder_2,
                                      model=tiny.model, use_cpu_offload=False, device="cpu",
                                      parallel_args=parallel_args)
        assert "forward" in vars(sampler.pipeline.transformer)  # parallelize_transformer bound its forward
        return sampler

    def video(self, sampler):
        """The final latents (what the VAE is given: the decoded video squashes differences)."""
        latents = []
        decode = sampler.vae.decode
        sampler.vae.decode = lambda z, *a, **k: latents.append(z.clone()) or decode(z, *a, **k)
        self.checks.predict(sampler)
        del sampler.vae.decode
        return latents[-1]

    def dit(self, sampler):
        return sampler.pipeline.transformer

    def enable(self, sampler, **kwargs):
        return self.script.enable_easycache(sampler, **kwargs)

    eager = dict(threshold=0.1, warmup_steps=2)


MODELS = {"wan21": Wan21, "hunyuan": Hunyuan}


def counted(module):
    """Calls reaching the module's forward as it is now (the parallel one), numbered."""
    calls = []
    inner = module.forward
    module.forward = lambda *a, **k: calls.append(1) or inner(*a, **k)
    return calls


def on_rank(rank, model, checkout):
    import xdit_cpu
    xdit_cpu.install()  # before the checkout imports xfuser's attention
    host = MODELS[model](checkout)
    out = {}
    for ulysses, ring in CONFIGS:
        started = time.perf_counter()
        xdit_cpu.parallel_state(ulysses, ring)
        result = {"plain": host.video(host.parallel()).flatten().tolist()}
        pipe = host.parallel()
        calls = counted(host.dit(pipe))
        cache = host.enable(pipe, enabled=False)
        result["off"] = host.video(pipe).flatten().tolist()
        report = cache.report()
        result["off_counts"] = [len(calls), report["dit_calls_computed"], report["dit_calls_total"]]
        pipe = host.parallel()
        calls = counted(host.dit(pipe))
        cache = host.enable(pipe, **host.eager)
        host.video(pipe)
        report = cache.report()
        result["cached"] = {"computed": [c["computed"] for c in report["calls"]], "calls": len(calls),
                            "reported": report["dit_calls_computed"], "agree": report["ranks_agree"],
                            "world": report["world_size"]}
        result["seconds"] = time.perf_counter() - started
        out[f"{ulysses}-{ring}"] = result
    return out


def main(model, checkout):
    from helpers import on_two_ranks
    started = time.perf_counter()
    ranks = on_two_ranks(Path(tempfile.mkdtemp()), on_rank, model, checkout)
    spawn_seconds = time.perf_counter() - started
    single = MODELS[model](checkout).single().flatten()
    for ulysses, ring in CONFIGS:
        name = f"{model} {'ulysses' if ulysses > 1 else 'ring'}{max(ulysses, ring)}"
        mine, other = (r[f"{ulysses}-{ring}"] for r in ranks)
        for result in (mine, other):
            assert result["off"] == result["plain"], f"{name}: cache off differs from the uncached run"
            calls, computed, total = result["off_counts"]
            assert calls == computed == total, (name, result["off_counts"])
        assert mine["plain"] == other["plain"], f"{name}: the ranks' outputs differ"
        error = (torch.tensor(mine["plain"]) - single).abs().max().item()
        assert error <= TOLERANCE, f"{name}: two processes differ from one by {error}"
        a, b = mine["cached"], other["cached"]
        assert a["computed"] == b["computed"] and a["agree"] is b["agree"] is True and a["world"] == 2, name
        for result in (a, b):
            assert result["calls"] == result["reported"] == sum(a["computed"]) < len(a["computed"]), (name, result)
        print(f"{name} ok: max |two processes - one process| {error:.3g} (max |one process| "
              f"{single.abs().max().item():.3g}), cache off == uncached (bitwise), EasyCache computed "
              f"{a['reported']}/{len(a['computed'])} on both ranks, decisions identical, {mine['seconds']:.1f} s")
    print(f"{model}: two processes {spawn_seconds:.1f} s (with imports)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
