"""Sampling as Wan2.1 does it: flow matching with the shifted schedule, the DiT called
separately for the conditional and the unconditional prediction, classifier-free guidance.

``TinyWanT2V`` mirrors Wan2.1's ``WanT2V``: a ``.model`` (the DiT) and a
``generate(input_prompt, ..., sampling_steps=...)``, so the Wan2.1 script's
``enable_easycache(pipe)`` wraps it unchanged.
"""

import json
from typing import Callable, List, Optional, Sequence, Union

import torch

from tinywan import data
from tinywan.model import TinyWanModel
from tinywan.text import TextEncoder
from tinywan.vae import FrameAutoencoder

LATENT_SHAPE = (8, data.FRAMES, data.HEIGHT // 4, data.WIDTH // 4)


def shift_sigma(sigma, shift: float):
    """Wan's timestep shift: sigma' = shift*sigma / (1 + (shift-1)*sigma)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def sigmas_for(steps: int, shift: float) -> torch.Tensor:
    """steps+1 noise levels from 1 to 0 (float64, so the schedule is exact)."""
    return shift_sigma(torch.linspace(1, 0, steps + 1, dtype=torch.float64), shift)


@torch.no_grad()
def sample_latents(model, cond: List[torch.Tensor], uncond: List[torch.Tensor],
                   noise: List[torch.Tensor], steps: int = 30, guide_scale: float = 5.0,
                   shift: float = 3.0,
                   on_step: Optional[Callable[[int, List[torch.Tensor], List[torch.Tensor]], None]] = None):
    """Euler steps of the flow x_sigma = (1-sigma) x0 + sigma*noise, velocity noise - x0.

    Per step, as Wan's pipelines: ``model(x, t=..., context=cond, seq_len=...)`` then the
    same with the unconditional context. ``on_step(i, x, v_cond)`` sees each step's input
    and conditional output (diagnostics).
    """
    x = [n.float().clone() for n in noise]
    seq_len = model.seq_len_for(x[0].shape) if hasattr(model, "seq_len_for") else None
    sigmas = sigmas_for(steps, shift)
    for i in range(steps):
        t = torch.full((len(x),), float(sigmas[i]) * 1000.0)
        v_cond = model(x, t=t, context=cond, seq_len=seq_len)
        v_uncond = model(x, t=t, context=uncond, seq_len=seq_len)
        if on_step is not None:
            on_step(i, x, v_cond)
        dt = float(sigmas[i + 1] - sigmas[i])
        x = [xi + dt * (u + guide_scale * (c - u)) for xi, c, u in zip(x, v_cond, v_uncond)]
    return x


def pipeline_state_dict(model, text_encoder, vae) -> dict:
    """One flat state dict, prefixed by component (shares storage with the modules)."""
    out = {}
    for prefix, module in (("model.", model), ("text_encoder.", text_encoder), ("vae.", vae)):
        out.update({prefix + k: v.detach() for k, v in module.state_dict().items()})
    return out


class TinyWanT2V:
    """Text-to-video pipeline: text encoder, DiT, frame autoencoder."""

    def __init__(self, model: TinyWanModel, text_encoder: TextEncoder, vae: FrameAutoencoder):
        self.model, self.text_encoder, self.vae = model.eval(), text_encoder.eval(), vae.eval()
        self.latent_shape = (model.out_dim, data.FRAMES, data.HEIGHT // 4, data.WIDTH // 4)

    @torch.no_grad()
    def generate(self, input_prompt: Union[str, Sequence[str]], frame_num: int = data.FRAMES,
                 shift: float = 3.0, sample_solver: str = "euler", sampling_steps: int = 30,
                 guide_scale: float = 5.0, n_prompt: str = "", seed: int = 0,
                 offload_model: bool = False, return_latents: bool = False, on_step=None):
        """Videos [3, F, H, W] in [-1, 1] (a list for a list of prompts), like WanT2V.generate."""
        if sample_solver != "euler":
            raise ValueError("only the flow-matching Euler solver is implemented")
        if frame_num != self.latent_shape[1]:
            raise ValueError(f"trained for {self.latent_shape[1]} frames")
        prompts = [input_prompt] if isinstance(input_prompt, str) else list(input_prompt)
        cond = self.text_encoder(prompts)
        uncond = self.text_encoder([n_prompt] * len(prompts))
        gen = torch.Generator().manual_seed(seed)
        noise = [torch.randn(self.latent_shape, generator=gen) for _ in prompts]
        latents = sample_latents(self.model, cond, uncond, noise, sampling_steps, guide_scale,
                                 shift, on_step)
        videos = list(self.vae.decode(torch.stack(latents)))
        if return_latents:
            return videos, latents
        return videos[0] if isinstance(input_prompt, str) else videos

    # Weights -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        return pipeline_state_dict(self.model, self.text_encoder, self.vae)

    def config(self) -> dict:
        return {"model": self.model.config, "text_encoder": self.text_encoder.config,
                "vae": self.vae.config}

    def save_safetensors(self, path: str, dtype: torch.dtype = torch.float32, metadata: dict = None) -> None:
        from safetensors.torch import save_file
        tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in self.state_dict().items()}
        meta = {"config": json.dumps(self.config())}
        meta.update({k: str(v) for k, v in (metadata or {}).items()})
        save_file(tensors, path, metadata=meta)

    @classmethod
    def build(cls, config: dict) -> "TinyWanT2V":
        return cls(TinyWanModel(**config["model"]), TextEncoder(**config["text_encoder"]),
                   FrameAutoencoder(**config["vae"]))

    @classmethod
    def from_pretrained(cls, path: str, ema: bool = True) -> "TinyWanT2V":
        """From a .safetensors export or a training checkpoint (EMA weights by default)."""
        if path.endswith(".safetensors"):
            from safetensors import safe_open
            from safetensors.torch import load_file
            with safe_open(path, "pt") as f:
                config = json.loads(f.metadata()["config"])
            state = {k: v.float() for k, v in load_file(path).items()}
        else:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            config, state = ckpt["config"], ckpt["ema" if ema else "weights"]
        pipe = cls.build(config)
        for prefix, module in (("model.", pipe.model), ("text_encoder.", pipe.text_encoder),
                               ("vae.", pipe.vae)):
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        return pipe


@torch.no_grad()
def trajectory_diagnostics(pipe: TinyWanT2V, prompt: str, sampling_steps: int = 30,
                           guide_scale: float = 5.0, shift: float = 3.0, seed: int = 0) -> List[dict]:
    """Per step i >= 1 on the conditional branch: the transformation rate
    k = mean|v_i - v_{i-1}| / mean|x_i - x_{i-1}|, and the relative one-step error of
    estimating v_i by reusing the transformation vector (x_i + v_{i-1} - x_{i-1}) versus
    reusing the output itself (v_{i-1})."""
    seen = []
    pipe.generate(prompt, sampling_steps=sampling_steps, guide_scale=guide_scale, shift=shift,
                  seed=seed, on_step=lambda i, x, v: seen.append((torch.cat([u.flatten() for u in x]),
                                                                   torch.cat([u.flatten() for u in v]))))
    rows = []
    for i in range(1, len(seen)):
        (x0, v0), (x1, v1) = seen[i - 1], seen[i]
        norm = v1.abs().mean()
        rows.append({
            "step": i,
            "k": float((v1 - v0).abs().mean() / (x1 - x0).abs().mean()),
            "err_reuse_delta": float((x1 + (v0 - x0) - v1).abs().mean() / norm),
            "err_reuse_output": float((v0 - v1).abs().mean() / norm),
        })
    return rows
