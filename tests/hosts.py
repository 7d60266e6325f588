"""The hosts the adapter x policy contract drives, each on its stand-in checkout: how to build a
pipeline, make one video, and see what reached the DiT. A new adapter joins the contract by
adding a Host here."""

import copy
import os
import sys
import tempfile

import pytest
import torch

from helpers import HUNYUAN_STANDIN, ROOT, WAN21_STANDIN


def import_standin(root):
    if root not in sys.path:
        sys.path.insert(0, root)


class Host:
    name = ""
    branches = 1
    steps = 12

    parallel = False  # whether the host has a multi-process path to test

    def make_parallel(self, rank):
        """Built as the host's multi-GPU path builds it, in a process of a two-rank group."""
        raise NotImplementedError

    def make(self):
        """A freshly built pipeline (the same weights every time)."""
        raise NotImplementedError

    def video(self, pipe, seed=0, steps=None):
        """One video's final latents."""
        raise NotImplementedError

    def dit(self, pipe):
        """The module whose forward the cache wraps."""
        raise NotImplementedError

    def block_lists(self, pipe):
        raise NotImplementedError

    def enable(self, pipe, policy=None, **settings):
        return self.adapter.enable_cache(pipe, policy, **settings)

    def count_dit_calls(self, pipe):
        """A list that grows by one per call reaching the DiT's own forward (whatever it is now)."""
        calls, module = [], self.dit(pipe)
        inner = module.forward
        module.forward = lambda *a, **k: calls.append(1) or inner(*a, **k)
        return calls

    def count_block_runs(self, pipe):
        runs = []
        for blocks in self.block_lists(pipe):
            for block in blocks._modules.values():
                block.register_forward_pre_hook(lambda *_: runs.append(1))
        return runs


class Wan21(Host):
    """Wan2.1's WanT2V on the stand-in: two branches (cond, uncond) per step, one block list."""

    name, branches, parallel = "wan21", 2, True

    @property
    def adapter(self):
        from easycache.adapters import wan21
        return wan21

    def make(self, cls_name="WanT2V", config="t2v-1.3B", **kwargs):
        import_standin(WAN21_STANDIN)
        import wan
        kwargs = {"device_id": 0, "rank": 0, **kwargs}
        return getattr(wan, cls_name)(config=wan.configs.WAN_CONFIGS[config], checkpoint_dir=tempfile.gettempdir(),
                                      **kwargs)

    def make_parallel(self, rank):
        return self.make(rank=rank, dit_fsdp=True, use_usp=True)  # FSDP + sequence parallel

    def video(self, pipe, seed=0, steps=None, prompt="a red ball rolls"):
        pipe.generate(prompt, size=(832, 480), frame_num=5, sampling_steps=steps or self.steps, seed=seed,
                      offload_model=False)
        return pipe.latents[0].clone()

    def dit(self, pipe):
        return pipe.model

    def block_lists(self, pipe):
        return [getattr(pipe.model, "module", pipe.model).blocks]


class HunyuanVideo(Host):
    """HunyuanVideo's sampler on the stand-in, with true CFG (one call of batch 2 per step),
    two block stacks."""

    name, branches, parallel = "hunyuanvideo", 1, True

    @property
    def adapter(self):
        from easycache.adapters import hunyuanvideo
        return hunyuanvideo

    def make(self, *extra):
        import_standin(HUNYUAN_STANDIN)
        import hyvideo.config
        import hyvideo.inference
        root = tempfile.mkdtemp()
        weight = os.path.join(root, "dit.pt")
        with open(weight, "wb") as f:
            f.write(b"stand-in")
        argv = ["--model-base", root, "--dit-weight", weight, "--flow-reverse", *extra]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "argv", ["sample_video.py", *argv])
            args = hyvideo.config.parse_args()
        return hyvideo.inference.HunyuanVideoSampler.from_pretrained(root, args=args)

    def make_parallel(self, rank):
        return self.make("--ulysses-degree", "2")  # xDiT's sequence parallel forward, bound on the instance

    def video(self, sampler, seed=0, steps=None, cfg_scale=5.0, prompt="a cat walks on the grass"):
        out = sampler.predict(prompt=prompt, height=64, width=64, video_length=5, seed=seed,
                              infer_steps=steps or self.steps, guidance_scale=cfg_scale, flow_shift=7.0,
                              embedded_guidance_scale=6.0)
        assert out["samples"].shape == (1, 3, 5, 64, 64)
        return sampler.pipeline.last_latents.clone()

    def dit(self, sampler):
        return sampler.pipeline.transformer

    def block_lists(self, sampler):
        return [sampler.pipeline.transformer.double_blocks, sampler.pipeline.transformer.single_blocks]


class TinyWan(Wan21):
    """The tinywan test bed (the shipped trained weights) through the Wan2.1 adapter, as the demo
    and the benchmark run it: a trajectory of a model that generates something."""

    name, parallel = "tinywan", False

    def make(self):
        from tinywan.sample import TinyWanT2V
        if not hasattr(TinyWan, "_state"):
            TinyWan._state = TinyWanT2V.from_pretrained(os.path.join(ROOT, "tinywan", "weights", "tinywan.safetensors"))
        pipe = TinyWan._state
        return type(pipe)(*[copy.deepcopy(m) for m in (pipe.model, pipe.text_encoder, pipe.vae)])

    def video(self, pipe, seed=0, steps=None, prompt="a large red circle moves right on a plain background"):
        return pipe.generate(prompt, sampling_steps=steps or self.steps, seed=seed, return_latents=True)[1][0]


HOSTS = [Wan21(), HunyuanVideo(), TinyWan()]


def required_settings(host, spec):
    """What a policy needs that has no default: TeaCache's polynomial (the identity: the published
    ones saturate on a tiny DiT) and MagCache's ratios (a slow, steady decay per call)."""
    given = {}
    names = {flag.setting for flag in spec.flags}
    if "coefficients" in names:
        given["coefficients"] = [1.0, 0.0]
    if "ratios" in names:
        given["ratios"] = [1.0] * host.branches + [0.95] * (host.branches * (host.steps - 1))
    return given


def torch_equal(a, b):
    return a.shape == b.shape and torch.equal(a, b)
