"""HunyuanVideoSampler: from_pretrained(models_root, args), predict(...), and the xDiT
parallelize_transformer that binds a sequence-parallel forward on the transformer instance,
calling the forward it captured and gathering output["x"].

Sequence parallel runs on xDiT's real engine as HunyuanVideo's hyvideo/inference.py drives it:
``from_pretrained`` sets up xfuser's parallel state (``init_distributed_environment``,
``initialize_model_parallel(sequence_parallel_degree=..., ring_degree=..., ulysses_degree=...)``),
``parallelize_transformer`` splits the latent and the RoPE tables by height (or width), puts an
``xFuserLongContextAttention()`` in every block's ``hybrid_seq_parallel_attn`` and gathers the
output with ``get_sp_group().all_gather``. HunyuanVideo pins xfuser 0.4.0, which does not install
without CUDA; the stand-in runs xfuser 0.7.0, whose ``xFuserLongContextAttention`` and parallel
state keep those interfaces.

Differences, all of the stand-in: gloo where upstream opens nccl; on a machine without CUDA the
test suite's patches that run xDiT on CPUs (tests/xdit_cpu.py) are applied before xfuser is used;
xfuser is imported when a parallel sampler is built (upstream imports it at the top; ``xfuser``
is a placeholder until then, None when it is not installed, as upstream has it); several
samplers in one process share one parallel state (upstream sets it up once per run).
"""

import functools
import importlib.util
import os
import random
import sys
import types
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from .constants import NEGATIVE_PROMPT
from .diffusion import FlowMatchDiscreteScheduler, HunyuanVideoPipeline
from .diffusion.pipelines import VAE, TextEncoder
from .modules import load_model

# upstream: ``import xfuser`` and these from xfuser.core.distributed at the top, None on failure
xfuser = types.SimpleNamespace(__name__="xfuser", imported=False) if importlib.util.find_spec("xfuser") else None
get_sequence_parallel_world_size = None
get_sequence_parallel_rank = None
get_sp_group = None
initialize_model_parallel = None
init_distributed_environment = None
_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, os.pardir)


def _import_xfuser():
    """Stand-in only: xfuser and its parallel-state functions into this module's namespace, after
    tests/xdit_cpu.py's install() on a machine without CUDA."""
    global xfuser, get_sequence_parallel_world_size, get_sequence_parallel_rank, get_sp_group
    global initialize_model_parallel, init_distributed_environment
    import xfuser as module
    if not torch.cuda.is_available():
        patches = sys.modules.get("xdit_cpu")
        if patches is None:
            spec = importlib.util.spec_from_file_location("xdit_cpu", os.path.join(_TESTS, "xdit_cpu.py"))
            patches = importlib.util.module_from_spec(spec)
            sys.modules["xdit_cpu"] = patches
            spec.loader.exec_module(patches)
        patches.install()
    from xfuser.core import distributed
    xfuser = module
    get_sequence_parallel_world_size = distributed.get_sequence_parallel_world_size
    get_sequence_parallel_rank = distributed.get_sequence_parallel_rank
    get_sp_group = distributed.get_sp_group
    initialize_model_parallel = distributed.initialize_model_parallel
    init_distributed_environment = distributed.init_distributed_environment
    return distributed


def parallelize_transformer(pipe):
    transformer = pipe.transformer
    original_forward = transformer.forward

    @functools.wraps(transformer.__class__.forward)
    def new_forward(self, x, t, text_states=None, text_mask=None, text_states_2=None, freqs_cos=None,
                    freqs_sin=None, guidance=None, return_dict=True):
        world, rank = get_sequence_parallel_world_size(), get_sequence_parallel_rank()
        # the latent's height, else its width, in patches of 2, must split evenly over the ranks
        split_dim = next((dim for dim in (-2, -1) if x.shape[dim] // 2 % world == 0), None)
        if split_dim is None:
            raise ValueError(f"Cannot split video sequence into ulysses_degree x ring_degree ({world}) parts evenly")
        grid = (x.shape[2], x.shape[3] // 2, x.shape[4] // 2)  # tokens per frame, row, column
        x = torch.chunk(x, world, dim=split_dim)[rank]
        freqs = [torch.chunk(f.reshape(*grid, f.shape[-1]), world, dim=split_dim - 1)[rank].reshape(-1, f.shape[-1])
                 for f in (freqs_cos, freqs_sin)]
        from xfuser.core.long_ctx_attention import xFuserLongContextAttention
        for block in transformer.double_blocks + transformer.single_blocks:
            block.hybrid_seq_parallel_attn = xFuserLongContextAttention()
        output = original_forward(x, t, text_states, text_mask, text_states_2, *freqs, guidance, return_dict)
        output["x"] = get_sp_group().all_gather(output["x"], dim=split_dim)
        return output

    transformer.forward = new_forward.__get__(transformer)


def _parallel_state(args):
    """Upstream's set-up in from_pretrained: the process group, then xfuser's parallel state (the
    stand-in: gloo, and a state already set up for these degrees is kept)."""
    assert xfuser is not None, "Ulysses Attention and Ring Attention requires xfuser package."
    assert args.use_cpu_offload is False, "Cannot enable use_cpu_offload in the distributed environment."
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    assert dist.get_world_size() == args.ring_degree * args.ulysses_degree, \
        "number of GPUs should be equal to ring_degree * ulysses_degree."
    distributed = _import_xfuser()
    if distributed.model_parallel_is_initialized():
        degrees = (distributed.get_ulysses_parallel_world_size(), distributed.get_ring_parallel_world_size())
        if degrees != (args.ulysses_degree, args.ring_degree):
            raise RuntimeError(f"xfuser's parallel state is set up for (ulysses, ring) = {degrees}, not "
                               f"{(args.ulysses_degree, args.ring_degree)}")
        return
    init_distributed_environment(rank=dist.get_rank(), world_size=dist.get_world_size())
    initialize_model_parallel(
        sequence_parallel_degree=dist.get_world_size(),
        ring_degree=args.ring_degree,
        ulysses_degree=args.ulysses_degree,
    )


def rope_1d(dim, positions, theta):
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2).float() / dim)
    angles = positions[:, None].float() * freqs[None]
    return angles.cos().repeat_interleave(2, 1), angles.sin().repeat_interleave(2, 1)


class Inference:
    def __init__(self, args, vae, vae_kwargs, text_encoder, model, text_encoder_2=None, pipeline=None,
                 use_cpu_offload=False, device=None, logger=None, parallel_args=None):
        self.vae, self.vae_kwargs = vae, vae_kwargs
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.model, self.pipeline, self.use_cpu_offload = model, pipeline, use_cpu_offload
        self.args, self.device, self.logger, self.parallel_args = args, device or "cpu", logger, parallel_args

    @classmethod
    def from_pretrained(cls, pretrained_model_path, args, device=None, **kwargs):
        if args.ulysses_degree > 1 or args.ring_degree > 1:
            _parallel_state(args)
        parallel_args = {"ulysses_degree": args.ulysses_degree, "ring_degree": args.ring_degree}
        torch.set_grad_enabled(False)
        with torch.random.fork_rng():
            torch.manual_seed(1234)  # the same "weights" in every process
            model = load_model(args, in_channels=args.latent_channels, out_channels=args.latent_channels,
                               factor_kwargs={"device": "cpu", "dtype": torch.float32})
        cls.load_state_dict(args, model, pretrained_model_path)
        model.eval()
        text_encoder = TextEncoder(args.text_states_dim, args.text_len)
        text_encoder_2 = TextEncoder(args.text_states_dim_2, args.text_len_2, pooled=True)
        return cls(args=args, vae=VAE(), vae_kwargs={"s_ratio": 8, "t_ratio": 4}, text_encoder=text_encoder,
                   text_encoder_2=text_encoder_2, model=model, use_cpu_offload=args.use_cpu_offload,
                   device="cpu", parallel_args=parallel_args)

    @staticmethod
    def load_state_dict(args, model, pretrained_model_path):
        if not Path(args.dit_weight).exists():
            raise ValueError(f"Invalid model path: {args.dit_weight}")
        return model  # the stand-in keeps its seeded random weights


class HunyuanVideoSampler(Inference):
    def __init__(self, args, vae, vae_kwargs, text_encoder, model, text_encoder_2=None, pipeline=None,
                 use_cpu_offload=False, device=0, logger=None, parallel_args=None):
        super().__init__(args, vae, vae_kwargs, text_encoder, model, text_encoder_2=text_encoder_2,
                         pipeline=pipeline, use_cpu_offload=use_cpu_offload, device=device, logger=logger,
                         parallel_args=parallel_args)
        self.pipeline = HunyuanVideoPipeline(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, transformer=model,
            scheduler=FlowMatchDiscreteScheduler(shift=args.flow_shift, reverse=args.flow_reverse,
                                                 solver=args.flow_solver), args=args)
        self.default_negative_prompt = NEGATIVE_PROMPT
        if self.parallel_args["ulysses_degree"] > 1 or self.parallel_args["ring_degree"] > 1:
            parallelize_transformer(self.pipeline)

    def get_rotary_pos_embed(self, video_length, height, width):
        sizes = [(video_length - 1) // 4 + 1, height // 8, width // 8]
        assert all(s % p == 0 for s, p in zip(sizes, self.model.patch_size)), \
            f"Latent size should be divisible by patch size({self.model.patch_size}), but got {sizes}."
        sizes = [s // p for s, p in zip(sizes, self.model.patch_size)]
        grid = torch.stack(torch.meshgrid(*[torch.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, 3)
        parts = [rope_1d(dim, grid[:, axis], self.args.rope_theta) for axis, dim in enumerate(self.model.rope_dim_list)]
        return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)

    @torch.no_grad()
    def predict(self, prompt, height=192, width=336, video_length=129, seed=None, negative_prompt=None,
                infer_steps=50, guidance_scale=6.0, flow_shift=5.0, embedded_guidance_scale=None, batch_size=1,
                num_videos_per_prompt=1, **kwargs):
        out_dict = {}
        if seed is None:
            seeds = [random.randint(0, 1_000_000) for _ in range(batch_size * num_videos_per_prompt)]
        elif isinstance(seed, int):
            seeds = [seed + i for _ in range(batch_size) for i in range(num_videos_per_prompt)]
        else:
            seeds = [int(s) for s in seed]
        generator = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        out_dict["seeds"] = seeds
        if width <= 0 or height <= 0 or video_length <= 0:
            raise ValueError("`height` and `width` and `video_length` must be positive integers")
        if (video_length - 1) % 4 != 0:
            raise ValueError(f"`video_length-1` must be a multiple of 4, got {video_length}")
        target_height, target_width = (height + 15) // 16 * 16, (width + 15) // 16 * 16
        out_dict["size"] = (target_height, target_width, video_length)
        if not isinstance(prompt, str):
            raise TypeError(f"`prompt` must be a string, but got {type(prompt)}")
        prompt = [prompt.strip()]
        if negative_prompt is None or negative_prompt == "":
            negative_prompt = self.default_negative_prompt
        if guidance_scale == 1.0:
            negative_prompt = ""
        negative_prompt = [negative_prompt.strip()]
        self.pipeline.scheduler = FlowMatchDiscreteScheduler(shift=flow_shift, reverse=self.args.flow_reverse,
                                                             solver=self.args.flow_solver)
        freqs_cos, freqs_sin = self.get_rotary_pos_embed(video_length, target_height, target_width)
        samples = self.pipeline(
            prompt=prompt, height=target_height, width=target_width, video_length=video_length,
            num_inference_steps=infer_steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            num_videos_per_prompt=num_videos_per_prompt, generator=generator, output_type="pil",
            freqs_cis=(freqs_cos, freqs_sin), n_tokens=freqs_cos.shape[0],
            embedded_guidance_scale=embedded_guidance_scale, data_type="video" if video_length > 1 else "image",
            is_progress_bar=True, vae_ver=self.args.vae, enable_tiling=self.args.vae_tiling)[0]
        out_dict["samples"] = samples
        out_dict["prompts"] = prompt
        return out_dict
