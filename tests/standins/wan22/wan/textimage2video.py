"""``WanTI2V`` with Wan2.2's interface (wan/textimage2video.py upstream), at a tiny size, for the
tests.

Mirrored: the constructor's arguments; ONE DiT ``self.model`` (``_configure_model`` as in
``text2video``); ``generate(...)`` dispatching to ``i2v(...)`` when an image is given, else
``t2v(...)``, with their signatures and defaults; the scheduler names imported here; per step the
per-token timestep [1, seq_len] (``mask2`` from ``masks_like``: the latent frames' tokens get t,
the image frame's tokens 0 in image mode, padding tokens t), ``self.model(x, t=timestep,
**arg_c)[0]`` then ``**arg_null``, CFG with one guide scale, ``sample_scheduler.step(...)``; in
image mode the first latent frame held at the image latent after every step; the VAE decode on
rank 0. Differences: CPU only (no CUDA calls, no ``gc.collect()`` after offloading); tiny stand-in
encoder, VAE (48 channels, stride (4, 16, 16)) and DiT; ``self.latents`` kept for the tests.
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
from PIL import Image
from tqdm import tqdm

from .distributed.fsdp import shard_model
from .distributed.sequence_parallel import sp_attn_forward, sp_dit_forward
from .distributed.util import get_world_size
from .modules.model import WanModel
from .modules.t5 import T5EncoderModel
from .modules.vae2_2 import Wan2_2_VAE
from .text2video import dit_config
from .utils.fm_solvers import FlowDPMSolverMultistepScheduler, get_sampling_sigmas, retrieve_timesteps
from .utils.fm_solvers_unipc import FlowUniPCMultistepScheduler
from .utils.utils import best_output_size, masks_like, to_tensor


class WanTI2V:

    def __init__(self, config, checkpoint_dir, device_id=0, rank=0, t5_fsdp=False, dit_fsdp=False, use_sp=False,
                 t5_cpu=False, init_on_cpu=True, convert_model_dtype=False):
        assert os.path.isdir(checkpoint_dir), f"checkpoint directory not found: {checkpoint_dir}"
        self.device = torch.device("cpu")  # upstream: cuda:{device_id}
        self.config = config
        self.rank = rank
        self.t5_cpu = t5_cpu
        self.init_on_cpu = init_on_cpu

        self.num_train_timesteps = config.num_train_timesteps
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
        self.vae = Wan2_2_VAE(vae_pth=os.path.join(checkpoint_dir, config.vae_checkpoint), device=self.device)
        self._autocast = convert_model_dtype and not dit_fsdp

        logging.info(f"Creating WanModel from {checkpoint_dir}")
        z_dim = self.vae.model.z_dim
        self.model = WanModel.from_pretrained(checkpoint_dir, **dit_config(config, 'ti2v', z_dim, z_dim))
        self.model = self._configure_model(model=self.model, use_sp=use_sp, dit_fsdp=dit_fsdp, shard_fn=shard_fn,
                                           convert_model_dtype=convert_model_dtype)
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

    def generate(self, input_prompt, img=None, size=(1280, 704), max_area=704 * 1280, frame_num=81, shift=5.0,
                 sample_solver='unipc', sampling_steps=50, guide_scale=5.0, n_prompt="", seed=-1,
                 offload_model=True):
        """Image-to-video when ``img`` is given (``max_area`` sets the size), else text-to-video
        (``size`` = (width, height))."""
        common = dict(input_prompt=input_prompt, frame_num=frame_num, shift=shift, sample_solver=sample_solver,
                      sampling_steps=sampling_steps, guide_scale=guide_scale, n_prompt=n_prompt, seed=seed,
                      offload_model=offload_model)
        if img is not None:
            return self.i2v(img=img, max_area=max_area, **common)
        return self.t2v(size=size, **common)

    def _encode_prompts(self, input_prompt, n_prompt, offload_model):
        if not self.t5_cpu:
            self.text_encoder.model.to(self.device)
            context = self.text_encoder([input_prompt], self.device)
            context_null = self.text_encoder([n_prompt], self.device)
            if offload_model:
                self.text_encoder.model.cpu()
        else:
            context = [t.to(self.device) for t in self.text_encoder([input_prompt], torch.device('cpu'))]
            context_null = [t.to(self.device) for t in self.text_encoder([n_prompt], torch.device('cpu'))]
        return context, context_null

    def _scheduler(self, sample_solver, sampling_steps, shift):
        if sample_solver == 'unipc':
            sample_scheduler = FlowUniPCMultistepScheduler(num_train_timesteps=self.num_train_timesteps, shift=1,
                                                           use_dynamic_shifting=False)
            sample_scheduler.set_timesteps(sampling_steps, device=self.device, shift=shift)
            return sample_scheduler, sample_scheduler.timesteps
        if sample_solver == 'dpm++':
            sample_scheduler = FlowDPMSolverMultistepScheduler(num_train_timesteps=self.num_train_timesteps, shift=1,
                                                               use_dynamic_shifting=False)
            sampling_sigmas = get_sampling_sigmas(sampling_steps, shift)
            timesteps, _ = retrieve_timesteps(sample_scheduler, device=self.device, sigmas=sampling_sigmas)
            return sample_scheduler, timesteps
        raise NotImplementedError("Unsupported solver.")

    @staticmethod
    def _token_timesteps(mask2, t, seq_len):
        """[1, seq_len]: t scaled by the mask at each token's (frame, row, column) (one mask value
        per 2x2 patch), padding tokens t."""
        timestep = torch.stack([t])
        temp_ts = (mask2[0][0][:, ::2, ::2] * timestep).flatten()
        temp_ts = torch.cat([temp_ts, temp_ts.new_ones(seq_len - temp_ts.size(0)) * timestep])
        return temp_ts.unsqueeze(0)

    def t2v(self, input_prompt, size=(1280, 704), frame_num=121, shift=5.0, sample_solver='unipc', sampling_steps=50,
            guide_scale=5.0, n_prompt="", seed=-1, offload_model=True):
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
        context, context_null = self._encode_prompts(input_prompt, n_prompt, offload_model)
        noise = [torch.randn(*target_shape, dtype=torch.float32, device=self.device, generator=seed_g)]

        @contextmanager
        def noop_no_sync():
            yield

        no_sync = getattr(self.model, 'no_sync', noop_no_sync)
        with (torch.amp.autocast(self.device.type, dtype=self.param_dtype, enabled=self._autocast), torch.no_grad(),
              no_sync()):
            sample_scheduler, timesteps = self._scheduler(sample_solver, sampling_steps, shift)
            latents = noise
            mask1, mask2 = masks_like(noise, zero=False)
            arg_c = {'context': context, 'seq_len': seq_len}
            arg_null = {'context': context_null, 'seq_len': seq_len}

            if offload_model or self.init_on_cpu:
                self.model.to(self.device)

            for _, t in enumerate(tqdm(timesteps)):
                latent_model_input = latents
                timestep = self._token_timesteps(mask2, t, seq_len)

                noise_pred_cond = self.model(latent_model_input, t=timestep, **arg_c)[0]
                noise_pred_uncond = self.model(latent_model_input, t=timestep, **arg_null)[0]
                noise_pred = noise_pred_uncond + guide_scale * (noise_pred_cond - noise_pred_uncond)

                temp_x0 = sample_scheduler.step(noise_pred.unsqueeze(0), t, latents[0].unsqueeze(0),
                                                return_dict=False, generator=seed_g)[0]
                latents = [temp_x0.squeeze(0)]
            x0 = latents
            self.latents = x0  # lets the tests compare trajectories bitwise
            if offload_model:
                self.model.cpu()
            if self.rank == 0:
                videos = self.vae.decode(x0)

        del noise, latents, sample_scheduler
        if dist.is_initialized():
            dist.barrier()
        return videos[0] if self.rank == 0 else None

    def i2v(self, input_prompt, img, max_area=704 * 1280, frame_num=121, shift=5.0, sample_solver='unipc',
            sampling_steps=40, guide_scale=5.0, n_prompt="", seed=-1, offload_model=True):
        # resize (cover) and center-crop the image to the best size of multiples of patch * stride
        ih, iw = img.height, img.width
        dh, dw = self.patch_size[1] * self.vae_stride[1], self.patch_size[2] * self.vae_stride[2]
        ow, oh = best_output_size(iw, ih, dw, dh, max_area)
        scale = max(ow / iw, oh / ih)
        img = img.resize((round(iw * scale), round(ih * scale)), Image.LANCZOS)
        x1, y1 = (img.width - ow) // 2, (img.height - oh) // 2
        img = img.crop((x1, y1, x1 + ow, y1 + oh))
        assert img.width == ow and img.height == oh
        img = to_tensor(img).sub_(0.5).div_(0.5).to(self.device).unsqueeze(1)

        F = frame_num
        lat_f = (F - 1) // self.vae_stride[0] + 1
        seq_len = lat_f * (oh // self.vae_stride[1]) * (ow // self.vae_stride[2]) // (
            self.patch_size[1] * self.patch_size[2])
        seq_len = int(math.ceil(seq_len / self.sp_size)) * self.sp_size

        seed = seed if seed >= 0 else random.randint(0, sys.maxsize)
        seed_g = torch.Generator(device=self.device)
        seed_g.manual_seed(seed)
        noise = torch.randn(self.vae.model.z_dim, lat_f, oh // self.vae_stride[1], ow // self.vae_stride[2],
                            dtype=torch.float32, generator=seed_g, device=self.device)

        if n_prompt == "":
            n_prompt = self.sample_neg_prompt
        context, context_null = self._encode_prompts(input_prompt, n_prompt, offload_model)
        z = self.vae.encode([img])

        @contextmanager
        def noop_no_sync():
            yield

        no_sync = getattr(self.model, 'no_sync', noop_no_sync)
        with (torch.amp.autocast(self.device.type, dtype=self.param_dtype, enabled=self._autocast), torch.no_grad(),
              no_sync()):
            sample_scheduler, timesteps = self._scheduler(sample_solver, sampling_steps, shift)
            latent = noise
            mask1, mask2 = masks_like([noise], zero=True)
            latent = (1. - mask2[0]) * z[0] + mask2[0] * latent
            arg_c = {'context': [context[0]], 'seq_len': seq_len}
            arg_null = {'context': context_null, 'seq_len': seq_len}

            if offload_model or self.init_on_cpu:
                self.model.to(self.device)

            for _, t in enumerate(tqdm(timesteps)):
                latent_model_input = [latent.to(self.device)]
                timestep = self._token_timesteps(mask2, t.to(self.device), seq_len)

                noise_pred_cond = self.model(latent_model_input, t=timestep, **arg_c)[0]
                noise_pred_uncond = self.model(latent_model_input, t=timestep, **arg_null)[0]
                noise_pred = noise_pred_uncond + guide_scale * (noise_pred_cond - noise_pred_uncond)

                temp_x0 = sample_scheduler.step(noise_pred.unsqueeze(0), t, latent.unsqueeze(0), return_dict=False,
                                                generator=seed_g)[0]
                latent = temp_x0.squeeze(0)
                latent = (1. - mask2[0]) * z[0] + mask2[0] * latent
                x0 = [latent]
                del latent_model_input, timestep

            self.latents = x0  # lets the tests compare trajectories bitwise
            if offload_model:
                self.model.cpu()
            if self.rank == 0:
                videos = self.vae.decode(x0)

        del noise, latent, x0, sample_scheduler
        if dist.is_initialized():
            dist.barrier()
        return videos[0] if self.rank == 0 else None
