"""``WanI2V`` with Wan2.2's interface (wan/image2video.py upstream), at a tiny size, for the tests.

Mirrored as in ``text2video`` (two experts, ``_configure_model``, ``_prepare_model_for_timestep``,
the scheduler names imported here, the per-step calls), plus the image conditioning: the latent
size from the image's aspect ratio and ``max_area`` (multiples of the patch size), 16-channel
noise, ``y`` = a 4-channel first-frame mask + the VAE latent of the image followed by black
frames, passed as ``'y': [y]`` in both branches' arguments (the DiT's input is 16 + 20 = 36
channels). Differences: CPU only (no CUDA calls, no ``gc.collect()`` after offloading); tiny
stand-in encoder, VAE and DiT; ``self.latents`` kept.
"""

import logging
import math
import os
import random
import sys
import types
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .distributed.fsdp import shard_model
from .distributed.sequence_parallel import sp_attn_forward, sp_dit_forward
from .distributed.util import get_world_size
from .modules.model import WanModel
from .modules.t5 import T5EncoderModel
from .modules.vae2_1 import Wan2_1_VAE
from .text2video import dit_config
from .utils.fm_solvers import FlowDPMSolverMultistepScheduler, get_sampling_sigmas, retrieve_timesteps
from .utils.fm_solvers_unipc import FlowUniPCMultistepScheduler
from .utils.utils import to_tensor


class WanI2V:

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
        z_dim = self.vae.model.z_dim
        sizes = dit_config(config, 'i2v', z_dim + 4 + z_dim, z_dim)
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
        """As ``WanT2V._configure_model``."""
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
        """As ``WanT2V._prepare_model_for_timestep``: high-noise expert while ``t >= boundary``."""
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

    def generate(self, input_prompt, img, max_area=720 * 1280, frame_num=81, shift=5.0, sample_solver='unipc',
                 sampling_steps=40, guide_scale=5.0, n_prompt="", seed=-1, offload_model=True):
        """A video [3, frame_num, H, W] in [-1, 1] following ``img`` (a PIL image) on rank 0."""
        guide_scale = (guide_scale, guide_scale) if isinstance(guide_scale, float) else guide_scale
        img = to_tensor(img).sub_(0.5).div_(0.5).to(self.device)

        F = frame_num
        h, w = img.shape[1:]
        aspect_ratio = h / w
        lat_h = round(np.sqrt(max_area * aspect_ratio) // self.vae_stride[1] // self.patch_size[1] *
                      self.patch_size[1])
        lat_w = round(np.sqrt(max_area / aspect_ratio) // self.vae_stride[2] // self.patch_size[2] *
                      self.patch_size[2])
        h = lat_h * self.vae_stride[1]
        w = lat_w * self.vae_stride[2]
        lat_f = (F - 1) // self.vae_stride[0] + 1

        max_seq_len = lat_f * lat_h * lat_w // (self.patch_size[1] * self.patch_size[2])
        max_seq_len = int(math.ceil(max_seq_len / self.sp_size)) * self.sp_size

        seed = seed if seed >= 0 else random.randint(0, sys.maxsize)
        seed_g = torch.Generator(device=self.device)
        seed_g.manual_seed(seed)
        noise = torch.randn(16, lat_f, lat_h, lat_w, dtype=torch.float32, generator=seed_g, device=self.device)

        # the first latent frame (the image's) marked on all four mask channels
        msk = torch.zeros(4, lat_f, lat_h, lat_w, device=self.device)
        msk[:, 0] = 1

        if n_prompt == "":
            n_prompt = self.sample_neg_prompt

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

        first = torch.nn.functional.interpolate(img[None].cpu(), size=(h, w), mode='bicubic').transpose(0, 1)
        y = self.vae.encode([torch.concat([first, torch.zeros(3, F - 1, h, w)], dim=1).to(self.device)])[0]
        y = torch.concat([msk, y])

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

            latent = noise
            arg_c = {'context': [context[0]], 'seq_len': max_seq_len, 'y': [y]}
            arg_null = {'context': context_null, 'seq_len': max_seq_len, 'y': [y]}

            for _, t in enumerate(tqdm(timesteps)):
                latent_model_input = [latent.to(self.device)]
                timestep = torch.stack([t]).to(self.device)

                model = self._prepare_model_for_timestep(t, boundary, offload_model)
                sample_guide_scale = guide_scale[1] if t.item() >= boundary else guide_scale[0]

                noise_pred_cond = model(latent_model_input, t=timestep, **arg_c)[0]
                noise_pred_uncond = model(latent_model_input, t=timestep, **arg_null)[0]
                noise_pred = noise_pred_uncond + sample_guide_scale * (noise_pred_cond - noise_pred_uncond)

                temp_x0 = sample_scheduler.step(noise_pred.unsqueeze(0), t, latent.unsqueeze(0), return_dict=False,
                                                generator=seed_g)[0]
                latent = temp_x0.squeeze(0)
                x0 = [latent]
                del latent_model_input, timestep

            self.latents = x0  # lets the tests compare trajectories bitwise
            if offload_model:
                self.low_noise_model.cpu()
                self.high_noise_model.cpu()
            if self.rank == 0:
                videos = self.vae.decode(x0)

        del noise, latent, x0, sample_scheduler
        if dist.is_initialized():
            dist.barrier()

        return videos[0] if self.rank == 0 else None
