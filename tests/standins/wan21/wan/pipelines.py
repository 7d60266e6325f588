"""Pipelines with Wan2.1's interfaces (wan/text2video.py, image2video.py,
first_last_frame2video.py, vace.py), at a tiny size, for the tests.

Mirrored: constructor arguments; ``self.model`` is the DiT, with the sequence-parallel
forward bound on the instance when ``use_usp`` (xDiT's engine: wan/distributed/xdit_context_parallel.py,
imported only then, ``sp_size`` from xfuser's parallel state) and wrapped in FSDP when ``dit_fsdp``;
``generate(...)`` signatures and defaults; per step ``self.model.to(device)``, then
``model(x, t=timestep, **arg_c)[0]`` (conditional) and ``model(x, t=timestep,
**arg_null)[0]`` (unconditional), CFG, a flow-matching solver step; VAE decode on rank 0.
The text encoder and VAE are small fixed maps, and the solver is flow-matching Euler with
Wan's timestep shift for both ``unipc`` and ``dpm++`` (same number of steps).
"""

import math
import os
import random
import sys
import types
import zlib
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .distributed.fsdp import shard_model
from .modules.model import VaceWanModel, WanModel

TEXT_LEN, TEXT_DIM, CLIP_TOKENS, CLIP_DIM = 8, 16, 4, 8


def _seeded(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class TextEncoder:
    """Deterministic [TEXT_LEN, TEXT_DIM] embedding per prompt."""

    def __call__(self, texts, device):
        return [_seeded(zlib.crc32(t.encode()), TEXT_LEN, TEXT_DIM).to(device) for t in texts]


class VAE:
    """Latent [z, F', h, w] <-> video [3, 4(F'-1)+1, 32h, 32w] by fixed channel maps."""

    def __init__(self, z_dim, stride):
        self.stride = stride
        self.model = types.SimpleNamespace(z_dim=z_dim)
        self.decoder = _seeded(1, 3, z_dim) / math.sqrt(z_dim)
        self.encoder = _seeded(2, z_dim, 3)

    def decode(self, zs):
        videos = []
        for z in zs:
            rgb = torch.tanh(torch.einsum("oc,cfhw->ofhw", self.decoder.to(z.device), z.float()))
            rgb = rgb.repeat_interleave(self.stride[0], dim=1)[:, self.stride[0] - 1:]
            videos.append(rgb.repeat_interleave(self.stride[1], 2).repeat_interleave(self.stride[2], 3))
        return videos

    def encode(self, videos):
        """[3, F, H, W] in [-1, 1] -> [z, F', H/32, W/32]."""
        out = []
        for v in videos:
            pooled = torch.nn.functional.avg_pool3d(v[None].float(), kernel_size=(1, *self.stride[1:]))[0]
            pooled = torch.cat([pooled[:, :1], pooled[:, 1::self.stride[0]]], dim=1)
            out.append(torch.einsum("oc,cfhw->ofhw", self.encoder.to(v.device), pooled))
        return out


def _image_tensor(img, h, w):
    img = img.convert("RGB").resize((w, h))
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1


class _Pipeline:
    model_class, model_kwargs = WanModel, {}

    def __init__(self, config, checkpoint_dir, device_id=0, rank=0, t5_fsdp=False, dit_fsdp=False,
                 use_usp=False, t5_cpu=False):
        assert os.path.isdir(checkpoint_dir), checkpoint_dir
        self.device = torch.device(f"cuda:{device_id}") if torch.cuda.is_available() else torch.device("cpu")
        self.config, self.rank, self.t5_cpu = config, rank, t5_cpu
        self.num_train_timesteps = config.num_train_timesteps
        self.param_dtype = config.param_dtype
        self.vae_stride, self.patch_size = config.vae_stride, config.patch_size
        self.text_encoder = TextEncoder()
        self.vae = VAE(config.z_dim, config.vae_stride)
        with torch.random.fork_rng():
            torch.manual_seed(0)  # same weights on every rank, as loading a checkpoint gives
            self.model = self.model_class(patch_size=config.patch_size, num_heads=config.num_heads,
                                          num_layers=config.num_layers, out_dim=config.z_dim, **self.model_kwargs)
        self.model.eval().requires_grad_(False)
        if use_usp:
            # upstream: ``from xfuser.core.distributed import get_sequence_parallel_world_size``
            from .distributed.xdit_context_parallel import (
                get_sequence_parallel_world_size,
                init_parallel_state,
                usp_attn_forward,
                usp_dit_forward,
            )
            init_parallel_state()  # stand-in only: a no-op when generate.py set the parallel state up
            for block in self.model.blocks:
                block.self_attn.forward = types.MethodType(usp_attn_forward, block.self_attn)
            self.model.forward = types.MethodType(usp_dit_forward, self.model)
            self.sp_size = get_sequence_parallel_world_size()
        else:
            self.sp_size = 1
        if dist.is_initialized():
            dist.barrier()
        if dit_fsdp:
            self.model = shard_model(self.model, device_id=device_id)
        else:
            self.model.to(self.device)
        self.sample_neg_prompt = config.sample_neg_prompt

    def _target(self, frame_num, h, w):
        target_shape = (self.vae.model.z_dim, (frame_num - 1) // self.vae_stride[0] + 1, h, w)
        seq_len = math.ceil(h * w / (self.patch_size[1] * self.patch_size[2]) * target_shape[1]
                            / self.sp_size) * self.sp_size
        return target_shape, seq_len

    def _sample(self, input_prompt, n_prompt, target_shape, shift, sampling_steps, guide_scale, seed,
                offload_model, extra_c=None, extra_null=None, model_kwargs=None):
        if n_prompt == "":
            n_prompt = self.sample_neg_prompt
        seed = seed if seed >= 0 else random.randint(0, sys.maxsize)
        seed_g = torch.Generator(device=self.device)
        seed_g.manual_seed(seed)
        context = self.text_encoder([input_prompt], self.device)
        context_null = self.text_encoder([n_prompt], self.device)
        noise = [torch.randn(*target_shape, dtype=torch.float32, device=self.device, generator=seed_g)]

        @contextmanager
        def noop_no_sync():
            yield

        no_sync = getattr(self.model, 'no_sync', noop_no_sync)
        autocast = torch.autocast(self.device.type, dtype=self.param_dtype, enabled=self.device.type == "cuda")
        with autocast, torch.no_grad(), no_sync():
            sigmas = torch.linspace(1, 0, sampling_steps + 1, dtype=torch.float64)
            sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
            timesteps = (sigmas[:-1] * self.num_train_timesteps).float().to(self.device)
            latents = noise
            arg_c = {'context': context, **(extra_c or {})}
            arg_null = {'context': context_null, **(extra_null or extra_c or {})}
            for i, t in enumerate(tqdm(timesteps)):
                timestep = torch.stack([t])
                self.model.to(self.device)
                noise_pred_cond = self.model(latents, t=timestep, **(model_kwargs or {}), **arg_c)[0]
                noise_pred_uncond = self.model(latents, t=timestep, **(model_kwargs or {}), **arg_null)[0]
                noise_pred = noise_pred_uncond + guide_scale * (noise_pred_cond - noise_pred_uncond)
                latents = [latents[0] + float(sigmas[i + 1] - sigmas[i]) * noise_pred]
            self.latents = latents  # lets the tests compare trajectories bitwise
            if offload_model:
                self.model.cpu()
            videos = self.vae.decode(latents) if self.rank == 0 else None
        if dist.is_initialized():
            dist.barrier()
        return videos[0] if self.rank == 0 else None


class WanT2V(_Pipeline):

    def generate(self, input_prompt, size=(1280, 720), frame_num=81, shift=5.0, sample_solver='unipc',
                 sampling_steps=50, guide_scale=5.0, n_prompt="", seed=-1, offload_model=True):
        target_shape, seq_len = self._target(frame_num, size[1] // self.vae_stride[1], size[0] // self.vae_stride[2])
        return self._sample(input_prompt, n_prompt, target_shape, shift, sampling_steps, guide_scale, seed,
                            offload_model, extra_c={'seq_len': seq_len})


class _ImageConditioned(_Pipeline):
    model_kwargs = dict(model_type="i2v", in_dim=4 + 4 + 4)

    def _conditioned(self, images, input_prompt, max_area, frame_num, shift, sampling_steps, guide_scale,
                     n_prompt, seed, offload_model):
        """Latent size from the first image's aspect ratio and max_area; y = mask + encoded frames."""
        aspect = images[0].size[1] / images[0].size[0]
        lat_h = max(1, round(math.sqrt(max_area * aspect) / self.vae_stride[1]))
        lat_w = max(1, round(math.sqrt(max_area / aspect) / self.vae_stride[2]))
        target_shape, seq_len = self._target(frame_num, lat_h, lat_w)
        frames = torch.zeros(3, frame_num, lat_h * self.vae_stride[1], lat_w * self.vae_stride[2])
        mask = torch.zeros(4, target_shape[1], lat_h, lat_w)
        for index, img in zip((0, frame_num - 1), images):
            frames[:, index] = _image_tensor(img, frames.shape[2], frames.shape[3])
            mask[:, 0 if index == 0 else -1] = 1
        y = torch.cat([mask, self.vae.encode([frames])[0]]).to(self.device)
        clip_fea = torch.stack([_seeded(len(images), CLIP_TOKENS, CLIP_DIM) + frames.mean()]).to(self.device)
        extra = {'clip_fea': clip_fea, 'seq_len': seq_len, 'y': [y]}
        return self._sample(input_prompt, n_prompt, target_shape, shift, sampling_steps, guide_scale, seed,
                            offload_model, extra_c=extra)


class WanI2V(_ImageConditioned):

    def generate(self, input_prompt, img, max_area=720 * 1280, frame_num=81, shift=5.0, sample_solver='unipc',
                 sampling_steps=40, guide_scale=5.0, n_prompt="", seed=-1, offload_model=True):
        return self._conditioned([img], input_prompt, max_area, frame_num, shift, sampling_steps, guide_scale,
                                 n_prompt, seed, offload_model)


class WanFLF2V(_ImageConditioned):
    model_kwargs = dict(model_type="flf2v", in_dim=4 + 4 + 4)

    def generate(self, input_prompt, first_frame, last_frame, max_area=720 * 1280, frame_num=81, shift=16,
                 sample_solver='unipc', sampling_steps=50, guide_scale=5.5, n_prompt="", seed=-1,
                 offload_model=True):
        return self._conditioned([first_frame, last_frame], input_prompt, max_area, frame_num, shift,
                                 sampling_steps, guide_scale, n_prompt, seed, offload_model)


class WanVace(_Pipeline):
    model_class, model_kwargs = VaceWanModel, dict(vace_dim=8)

    def prepare_source(self, src_video, src_mask, src_ref_images, num_frames, image_size, device):
        """Zero video and full mask where none is given, as Wan2.1 does for text-only VACE."""
        width, height = image_size
        videos, masks = [], []
        for video, mask in zip(src_video, src_mask):
            videos.append(torch.zeros(3, num_frames, height, width, device=self.device))
            masks.append(torch.ones(1, num_frames, height, width, device=self.device))
        return videos, masks, src_ref_images

    def generate(self, input_prompt, input_frames, input_masks, input_ref_images, size=(1280, 720), frame_num=81,
                 context_scale=1.0, shift=5.0, sample_solver='unipc', sampling_steps=50, guide_scale=5.0,
                 n_prompt="", seed=-1, offload_model=True):
        target_shape, seq_len = self._target(frame_num, size[1] // self.vae_stride[1], size[0] // self.vae_stride[2])
        frames, masks = input_frames[0], input_masks[0]
        inactive = self.vae.encode([frames * (1 - masks)])[0]
        reactive = self.vae.encode([frames * masks])[0]
        z = [torch.cat([inactive, reactive])]
        return self._sample(input_prompt, n_prompt, target_shape, shift, sampling_steps, guide_scale, seed,
                            offload_model, extra_c={'seq_len': seq_len},
                            model_kwargs={'vace_context': z, 'vace_context_scale': context_scale})
