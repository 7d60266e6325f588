"""The hosts the adapter x policy contract drives, each on its stand-in checkout: how to build a
pipeline, make one video, and see what reached the DiT. A new adapter joins the contract by
adding a Host here."""

import copy
import importlib
import os
import sys
import tempfile

import pytest
import torch

from helpers import HUNYUAN_STANDIN, ROOT, WAN21_STANDIN, WAN22_STANDIN


def import_standin(root):
    if root not in sys.path:
        sys.path.insert(0, root)


class Host:
    name = ""
    branches = 1
    steps = 12
    parallel_levels = ("model", "blocks")  # the policy levels its parallel path supports

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

    def dits(self, pipe):
        """The modules whose forward the cache wraps, by the cache's name for them (None: the one)."""
        raise NotImplementedError

    def block_lists(self, pipe):
        return [getattr(dit, "module", dit).blocks for dit in self.dits(pipe).values()]

    def outputs_of(self, result):
        """The prediction tensors in what the DiT returned."""
        return result

    def enable(self, pipe, policy=None, **settings):
        return self.adapter.enable_cache(pipe, policy, **settings)

    def count_dit_calls(self, pipe):
        """A list that grows by the DiT's name per call reaching its own forward (whatever it is now)."""
        calls = []
        for name, module in self.dits(pipe).items():
            inner = module.forward
            module.forward = lambda *a, inner=inner, name=name, **k: calls.append(name) or inner(*a, **k)
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

    def dits(self, pipe):
        return {None: pipe.model}


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

    def dits(self, sampler):
        return {None: sampler.pipeline.transformer}

    def outputs_of(self, result):
        return [result["x"] if isinstance(result, dict) else result]

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


def import_checkout(root, names=("wan", "generate")):
    """A stand-in checkout's ``generate`` imported beside another one's (Wan2.1's and Wan2.2's are
    both ``wan`` and ``generate``): imported with its root first on the path, then its modules
    taken out of sys.modules again, the ones there before put back. Its code keeps working: it
    holds its modules, not their names."""
    def ours(name):
        return any(name == n or name.startswith(n + ".") for n in names)
    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, root)
    try:
        return importlib.import_module("generate")
    finally:
        sys.path.remove(root)
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


class Wan22(Wan21):
    """Wan2.2 on its stand-in: T2V-A14B's two experts (12 steps: 8 on the high-noise expert, 4 on
    the low-noise one), each with its own cache; both branches per step."""

    name, parallel, task, pipeline = "wan22-t2v-A14B", True, "t2v-A14B", "WanT2V"

    @property
    def adapter(self):
        from easycache.adapters import wan22
        return wan22

    @property
    def generate(self):
        if not hasattr(type(self), "_generate"):
            type(self)._generate = import_checkout(WAN22_STANDIN)
        return type(self)._generate

    def make(self, **kwargs):
        gen = self.generate
        kwargs = {"device_id": 0, "rank": 0, **kwargs}
        return getattr(gen.wan, self.pipeline)(config=gen.WAN_CONFIGS[self.task],
                                                checkpoint_dir=tempfile.gettempdir(), **kwargs)

    def make_parallel(self, rank):
        return self.make(rank=rank, dit_fsdp=True, use_sp=True)

    def video(self, pipe, seed=0, steps=None, prompt="a red ball rolls"):
        pipe.generate(prompt, size=self.generate.SIZE_CONFIGS["1280*720"], frame_num=5, seed=seed, shift=12.0,
                      sampling_steps=steps or self.steps, offload_model=True)
        return pipe.latents[0].clone()

    def dits(self, pipe):
        return {"high": pipe.high_noise_model, "low": pipe.low_noise_model}


class Wan22TI2V(Wan22):
    """Wan2.2 TI2V-5B on its stand-in: one model fed a per-token timestep."""

    name, task, pipeline = "wan22-ti2v-5B", "ti2v-5B", "WanTI2V"

    def video(self, pipe, seed=0, steps=None, prompt="a red ball rolls"):
        pipe.generate(prompt, size=self.generate.SIZE_CONFIGS["1280*704"], frame_num=5, seed=seed,
                      sampling_steps=steps or self.steps, offload_model=True)
        return pipe.latents[0].clone()

    def dits(self, pipe):
        return {None: pipe.model}


HOSTS += [Wan22(), Wan22TI2V()]


def cpu_context_parallel(transformer) -> None:
    """``transformer.enable_parallelism`` with diffusers' real context-parallel hooks over gloo on
    CPUs: diffusers sizes its device from the accelerator count (none here: one is claimed) and
    builds its mesh on that device type (a CPU mesh is given)."""
    from diffusers import ContextParallelConfig
    from torch.distributed.device_mesh import init_device_mesh
    torch.accelerator.device_count = lambda: 1
    mesh = init_device_mesh("cpu", (1, 2), mesh_dim_names=("ring", "ulysses"))
    transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=2, mesh=mesh))


class DiffusersHost(Host):
    def outputs_of(self, result):
        return [result[0] if isinstance(result, tuple) else result.sample]


class DiffusersWan(DiffusersHost):
    """diffusers' WanPipeline (Wan 2.1) with a tiny random WanTransformer3DModel built from a config
    (no download): cond and uncond calls in cache contexts that give the step index."""

    name, branches, parallel = "diffusers-wan", 2, True
    parallel_levels = ("model",)  # context parallelism splits inside the first block
    two_experts = False

    @property
    def adapter(self):
        from easycache.adapters import diffusers
        return diffusers

    @staticmethod
    def transformer(seed=0, in_channels=16, **extra):
        from diffusers import WanTransformer3DModel
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                         in_channels=in_channels, out_channels=16, text_dim=32, freq_dim=256,
                                         ffn_dim=32, num_layers=2, cross_attn_norm=True,
                                         qk_norm="rms_norm_across_heads", rope_max_seq_len=32, **extra).eval()

    @staticmethod
    def vae():
        from diffusers import AutoencoderKLWan
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                    temperal_downsample=[False, True, True]).eval()

    def make(self):
        from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline
        extra = dict(transformer_2=self.transformer(1), boundary_ratio=0.875) if self.two_experts else {}
        return WanPipeline(tokenizer=None, text_encoder=None, transformer=self.transformer(), vae=self.vae(),
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), **extra)

    def embeds(self, seed):
        g = torch.Generator().manual_seed(1000 + seed)
        return dict(prompt_embeds=torch.randn(1, 8, 32, generator=g), negative_prompt_embeds=torch.randn(1, 8, 32, generator=g))

    def make_parallel(self, rank):
        """diffusers' own context parallelism (Ulysses over the two ranks), enabled before the cache."""
        pipe = self.make()
        for transformer in self.dits(pipe).values():
            cpu_context_parallel(transformer)
        return pipe

    def video(self, pipe, seed=0, steps=None):
        # 32 x 32 pixels, 9 frames: 3 x 4 latent tokens, which split over two ranks
        return pipe(**self.embeds(seed), height=32, width=32, num_frames=9, num_inference_steps=steps or self.steps,
                    guidance_scale=5.0, generator=torch.Generator().manual_seed(seed), output_type="latent").frames

    def dits(self, pipe):
        return {"high": pipe.transformer, "low": pipe.transformer_2} if self.two_experts else {None: pipe.transformer}


class DiffusersWan22(DiffusersWan):
    """diffusers' WanPipeline with Wan 2.2's two transformers (boundary_ratio 0.875): the global
    step index keeps counting across the switch."""

    name, two_experts = "diffusers-wan22", True


class DiffusersHunyuan(DiffusersHost):
    """diffusers' HunyuanVideoPipeline with true CFG (a negative prompt and true_cfg_scale > 1): cond
    and uncond calls in cache contexts that give only their name."""

    name, branches, parallel = "diffusers-hunyuanvideo", 2, False

    @property
    def adapter(self):
        from easycache.adapters import diffusers
        return diffusers

    def make(self):
        from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline
        from diffusers import HunyuanVideoTransformer3DModel
        with torch.random.fork_rng():
            torch.manual_seed(0)
            transformer = HunyuanVideoTransformer3DModel(
                in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=2,
                num_single_layers=2, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
                text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4)).eval()
            vae = AutoencoderKLHunyuanVideo(
                in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
                up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
                temporal_compression_ratio=4, mid_block_add_attention=True).eval()
        return HunyuanVideoPipeline(text_encoder=None, tokenizer=None, transformer=transformer, vae=vae,
                                    scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=None,
                                    tokenizer_2=None)

    def video(self, pipe, seed=0, steps=None, true_cfg=True):
        g = torch.Generator().manual_seed(2000 + seed)
        cond = dict(prompt_embeds=torch.randn(1, 6, 16, generator=g), pooled_prompt_embeds=torch.randn(1, 8, generator=g),
                    prompt_attention_mask=torch.ones(1, 6, dtype=torch.long))
        uncond = dict(negative_prompt_embeds=torch.randn(1, 6, 16, generator=g),
                      negative_pooled_prompt_embeds=torch.randn(1, 8, generator=g),
                      negative_prompt_attention_mask=torch.ones(1, 6, dtype=torch.long)) if true_cfg else {}
        return pipe(**cond, **uncond, true_cfg_scale=4.0 if true_cfg else 1.0, guidance_scale=6.0, height=16,
                    width=16, num_frames=9, num_inference_steps=steps or self.steps,
                    generator=torch.Generator().manual_seed(seed), output_type="latent").frames

    def dits(self, pipe):
        return {None: pipe.transformer}

    def block_lists(self, pipe):
        return [pipe.transformer.transformer_blocks, pipe.transformer.single_transformer_blocks]


HOSTS += [DiffusersWan(), DiffusersWan22(), DiffusersHunyuan()]
