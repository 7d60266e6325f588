"""``WanT2V`` with Wan2.2's interface (wan/text2video.py upstream), at a tiny size, for the tests.

Mirrored: the constructor's arguments; two DiT instances ``self.low_noise_model`` and
``self.high_noise_model`` (different weights), each configured by ``_configure_model`` (eval,
sequence-parallel forwards bound on the instance with ``use_sp``, FSDP through ``shard_fn`` with
``dit_fsdp``); ``init_on_cpu``; ``_prepare_model_for_timestep`` (the high-noise expert
while ``t >= boundary``, its offloading rule); ``generate(...)``'s signature and defaults, the scheduler
chosen by ``sample_solver`` from the names this module imports, and per step the expert, its guide
scale, ``model(x, t=timestep, **arg_c)[0]`` (conditional) then ``model(x, t=timestep,
**arg_null)[0]`` (unconditional), CFG and ``sample_scheduler.step(...)``; the VAE decode on rank
0. Differences: everything runs on the CPU (``self.device``; no CUDA calls, no ``gc.collect()``
after offloading); the text encoder, VAE and DiT are tiny stand-ins; the final latents stay on
``self.latents`` for the tests.
"""

import logging
import math
import os
import random
import sys
import types
from contextlib import contextmanager
from functools import partial

import torch
import torch.distributed as dist
from tqdm import tqdm

from .distributed.fsdp import shard_model
from .distributed.sequence_parallel import sp_attn_forward, sp_dit_forward
from .distributed.util import get_world_size
from .modules.model import WanModel
from .modules.t5 import T5EncoderModel
from .modules.vae2_1 import Wan2_1_VAE
from .utils.fm_solvers import FlowDPMSolverMultistepScheduler, get_sampling_sigmas, retrieve_timesteps
from .utils.fm_solvers_unipc import FlowUniPCMultistepScheduler

DIT_SIZES = ('patch_size', 'text_len', 'dim', 'ffn_dim', 'freq_dim', 'text_dim', 'num_heads', 'num_layers',
             'window_size', 'qk_norm', 'cross_attn_norm', 'eps')


def dit_config(config, model_type, in_dim, out_dim):
    """The stand-in DiT's constructor arguments (upstream they come from the checkpoint's config)."""
    return dict(model_type=model_type, in_dim=in_dim, out_dim=out_dim, **{k: config[k] for k in DIT_SIZES})


class WanT2V:

    def __init__(self, config, checkpoint_dir, device_id=0, rank=0, t5_fsdp=False, dit_fsdp=False, use_sp=False,
                 t5_cpu=False, init_on_cpu=True, convert_model_dtype=False):
        assert os.path.isdir(checkpoint_dir), f"checkpoint directory not found: {checkpoint_dir}"
        self.device = torch.device("cpu")  # upstream: cuda:{device_id}
        self.config = config
        self.rank = rank
        self.t5_cpu = t5_cpu
        self.init_on_cpu = init_on_cpu

        self.num_train_timesteps = config.num_train_timesteps
        self.boundary = config.boundary
        self.param_dtype = config.param_dtype

        if t5_fsdp or dit_fsdp or use_sp:
            self.init_on_cpu = False

        shard_fn = partial(shard_model, device_id=device_id)
        self.text_encoder = T5EncoderModel(
            text_len=config.text_len, dtype=config.t5_dtype, device=torch.device('cpu'),
            checkpoint_path=os.path.join(checkpoint_dir, config.t5_checkpoint),
            tokenizer_path=os.path.join(checkpoint_dir, config.t5_tokenizer),
            shard_fn=shard_fn if t5_fsdp else None)

        self.vae_stride = config.vae_stride
        self.patch_size = config.patch_size
        self.vae = Wan2_1_VAE(vae_pth=os.path.join(checkpoint_dir, config.vae_checkpoint), device=self.device)
        self._autocast = convert_model_dtype and not dit_fsdp

        logging.info(f"Creating WanModel from {checkpoint_dir}")
        sizes = dit_config(config, 't2v', self.vae.model.z_dim, self.vae.model.z_dim)
        self.low_noise_model = WanModel.from_pretrained(checkpoint_dir, subfolder=config.low_noise_checkpoint,
                                                        **sizes)
        self.low_noise_model = self._configure_model(model=self.low_noise_model, use_sp=use_sp, dit_fsdp=dit_fsdp,
                                                     shard_fn=shard_fn, convert_model_dtype=convert_model_dtype)
        self.high_noise_model = WanModel.from_pretrained(checkpoint_dir, subfolder=config.high_noise_checkpoint,
                                                         **sizes)
        self.high_noise_model = self._configure_model(model=self.high_noise_model, use_sp=use_sp, dit_fsdp=dit_fsdp,
                                                      shard_fn=shard_fn, convert_model_dtype=convert_model_dtype)
        self.sp_size = get_world_size() if use_sp else 1
        self.sample_neg_prompt = config.sample_neg_prompt

    def _configure_model(self, model, use_sp, dit_fsdp, shard_fn, convert_model_dtype):
        """Eval mode, no grads; with ``use_sp`` the sequence-parallel forwards bound on this
        instance (each block's ``self_attn`` and the model); with ``dit_fsdp`` the FSDP wrapper is
        returned, otherwise the model (converted to ``param_dtype`` if asked, and moved to the
        device unless ``init_on_cpu``)."""
        model.eval().requires_grad_(False)
        if use_sp:
            for block in model.blocks:
                block.self_attn.forward = types.MethodType(sp_attn_forward, block.self_attn)
            model.forward = types.MethodType(sp_dit_forward, model)
        if dist.is_initialized():
            dist.barrier()
        if dit_fsdp:
            model = shard_fn(model)
        else:
            if convert_model_dtype:
                model.to(self.param_dtype)
            if not self.init_on_cpu:
                model.to(self.device)
        return model

    def _prepare_model_for_timestep(self, t, boundary, offload_model):
        """The expert for timestep ``t``: the high-noise one when ``t >= boundary``, else the
        low-noise one; when offloading (or ``init_on_cpu``) the other goes to the CPU if it is on
        a GPU and the required one to ``self.device`` if it is on the CPU."""
        if t.item() >= boundary:
            required_model_name, offload_model_name = 'high_noise_model', 'low_noise_model'
        else:
            required_model_name, offload_model_name = 'low_noise_model', 'high_noise_model'
        if offload_model or self.init_on_cpu:
            if next(getattr(self, offload_model_name).parameters()).device.type == 'cuda':
                getattr(self, offload_model_name).to('cpu')
            if next(getattr(self, required_model_name).parameters()).device.type == 'cpu':
                getattr(self, required_model_name).to(self.device)
        return getattr(self, required_model_name)

    def generate(self, input_prompt, size=(1280, 720), frame_num=81, shift=5.0, sample_solver='unipc',
                 sampling_steps=50, guide_scale=5.0, n_prompt="", seed=-1, offload_model=True):
        """A video [3, frame_num, size[1], size[0]] in [-1, 1] on rank 0 (None elsewhere).
        ``guide_scale``: one value or (low-noise, high-noise)."""
        guide_scale = (guide_scale, guide_scale) if isinstance(guide_scale, float) else guide_scale
        F = frame_num
        target_shape = (self.vae.model.z_dim, (F - 1) // self.vae_stride[0] + 1, size[1] // self.vae_stride[1],
                        size[0] // self.vae_stride[2])
        seq_len = math.ceil((target_shape[2] * target_shape[3]) / (self.patch_size[1] * self.patch_size[2]) *
                            target_shape[1] / self.sp_size) * self.sp_size

        if n_prompt == "":
            n_prompt = self.sample_neg_prompt
        seed = seed if seed >= 0 else random.randint(0, sys.maxsize)
        seed_g = torch.Generator(device=self.device)
        seed_g.manual_seed(seed)

        if not self.t5_cpu:
            self.text_encoder.model.to(self.device)
            context = self.text_encoder([input_prompt], self.device)
            context_null = self.text_encoder([n_prompt], self.device)
            if offload_model:
                self.text_encoder.model.cpu()
        else:
            context = self.text_encoder([input_prompt], torch.device('cpu'))
            context_null = self.text_encoder([n_prompt], torch.device('cpu'))
            context = [t.to(self.device) for t in context]
            context_null = [t.to(self.device) for t in context_null]

        noise = [torch.randn(*target_shape, dtype=torch.float32, device=self.device, generator=seed_g)]

        @contextmanager
        def noop_no_sync():
            yield

        no_sync_low_noise = getattr(self.low_noise_model, 'no_sync', noop_no_sync)
        no_sync_high_noise = getattr(self.high_noise_model, 'no_sync', noop_no_sync)

        with (torch.amp.autocast(self.device.type, dtype=self.param_dtype, enabled=self._autocast), torch.no_grad(),
              no_sync_low_noise(), no_sync_high_noise()):
            boundary = self.boundary * self.num_train_timesteps

            if sample_solver == 'unipc':
                sample_scheduler = FlowUniPCMultistepScheduler(num_train_timesteps=self.num_train_timesteps, shift=1,
                                                               use_dynamic_shifting=False)
                sample_scheduler.set_timesteps(sampling_steps, device=self.device, shift=shift)
                timesteps = sample_scheduler.timesteps
            elif sample_solver == 'dpm++':
                sample_scheduler = FlowDPMSolverMultistepScheduler(num_train_timesteps=self.num_train_timesteps,
                                                                   shift=1, use_dynamic_shifting=False)
                sampling_sigmas = get_sampling_sigmas(sampling_steps, shift)
                timesteps, _ = retrieve_timesteps(sample_scheduler, device=self.device, sigmas=sampling_sigmas)
            else:
                raise NotImplementedError("Unsupported solver.")

            latents = noise
            arg_c = {'context': context, 'seq_len': seq_len}
            arg_null = {'context': context_null, 'seq_len': seq_len}

            for _, t in enumerate(tqdm(timesteps)):
                latent_model_input = latents
                timestep = torch.stack([t])

                model = self._prepare_model_for_timestep(t, boundary, offload_model)
                sample_guide_scale = guide_scale[1] if t.item() >= boundary else guide_scale[0]

                noise_pred_cond = model(latent_model_input, t=timestep, **arg_c)[0]
                noise_pred_uncond = model(latent_model_input, t=timestep, **arg_null)[0]
                noise_pred = noise_pred_uncond + sample_guide_scale * (noise_pred_cond - noise_pred_uncond)

                temp_x0 = sample_scheduler.step(noise_pred.unsqueeze(0), t, latents[0].unsqueeze(0),
                                                return_dict=False, generator=seed_g)[0]
                latents = [temp_x0.squeeze(0)]

            x0 = latents
            self.latents = x0  # lets the tests compare trajectories bitwise
            if offload_model:
                self.low_noise_model.cpu()
                self.high_noise_model.cpu()
            if self.rank == 0:
                videos = self.vae.decode(x0)

        del noise, latents, sample_scheduler
        if dist.is_initialized():
            dist.barrier()

        return videos[0] if self.rank == 0 else None
