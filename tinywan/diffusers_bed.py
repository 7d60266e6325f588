"""A second cache test bed: a small diffusers ``WanTransformer3DModel`` trained on tinywan's
data, sampled by the UNMODIFIED diffusers ``WanPipeline``.

The pipeline runs without tokenizer, text encoder and VAE: ``prompt_embeds`` come from
tinywan's (shipped, frozen) text encoder, zero-padded to a fixed length as diffusers pads
umT5's output; the latents come back with ``output_type="latent"`` and tinywan's frame
autoencoder decodes them. With ``vae=None`` the pipeline assumes Wan's VAE compression
(4x in time, 8x in space), so ``num_frames=61, height=width=64`` makes latents
[8, (61-1)//4+1, 64//8, 64//8] = [8, 16, 8, 8]: exactly tinywan's latent shape.

Flow-matching convention (that of ``FlowMatchEulerDiscreteScheduler`` and of Wan's UniPC
configuration, and the one ``tinywan.train_diffusers`` trains with): the transformer gets
``timestep = 1000 * sigma`` with the shifted sigma(shift 3), the noisy latent is
``x_sigma = (1 - sigma) * x0 + sigma * noise`` and the prediction is the velocity
``noise - x0``; the pipeline calls the transformer once per branch per step, ``"cond"``
then ``"uncond"``, each inside ``transformer.cache_context(name, ...)``.

    bed = load()                                   # tinywan/weights/tinywan_diffusers
    pipe = make_pipeline(bed.transformer)          # or scheduler="unipc"
    video = generate(pipe, bed.text_encoder, bed.autoencoder, "a large red circle moves right on a plain background", seed=0)
"""

import contextlib
import os
from typing import List, NamedTuple, Sequence, Union

import torch
from torch import nn

from tinywan import data
from tinywan.record_check import sha256  # noqa: F401  (the weights' checksum, as tinywan's check records it)
from tinywan.sample import TinyWanT2V
from tinywan.text import TextEncoder
from tinywan.vae import FrameAutoencoder

HERE = os.path.dirname(os.path.abspath(__file__))
TINYWAN_WEIGHTS = os.path.join(HERE, "weights", "tinywan.safetensors")
WEIGHTS_DIR = os.path.join(HERE, "weights", "tinywan_diffusers")
CHECK = "check.json"  # in the weights folder: sha256 of the weights file and one recorded sample
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"  # what save_pretrained writes

# The pipeline's pixel grid for tinywan's latents (vae=None: 4x temporal, 8x spatial).
NUM_FRAMES, HEIGHT, WIDTH = 4 * (data.FRAMES - 1) + 1, 8 * (data.HEIGHT // 4), 8 * (data.WIDTH // 4)
LATENT_SHAPE = (8, data.FRAMES, data.HEIGHT // 4, data.WIDTH // 4)
TEXT_TOKENS = 32  # prompt_embeds are zero-padded to this many tokens (the text encoder's max_len)
SHIFT = 3.0


def transformer_config(heads: int = 6, head_dim: int = 32, ffn: int = 512, layers: int = 6,
                       text_dim: int = 128, channels: int = LATENT_SHAPE[0]) -> dict:
    """Wan2.1's architecture (patch (1, 2, 2), q/k RMSNorm across heads, cross-attention norm),
    scaled down: 256 tokens per tinywan latent."""
    return dict(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim,
                in_channels=channels, out_channels=channels, text_dim=text_dim, freq_dim=256,
                ffn_dim=ffn, num_layers=layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                eps=1e-6, rope_max_seq_len=1024)


def build_transformer(config: dict = None, seed: int = 0, adaln_zero: bool = True):
    """A fresh ``WanTransformer3DModel``. ``adaln_zero``: start every block as the identity and
    the output at zero, as tinywan's DiT does (trains faster at this size than diffusers' init)."""
    from diffusers import WanTransformer3DModel
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = WanTransformer3DModel(**(config or transformer_config()))
    if adaln_zero:
        with torch.no_grad():
            for p in (model.proj_out.weight, model.proj_out.bias, model.scale_shift_table,
                      model.condition_embedder.time_proj.weight, model.condition_embedder.time_proj.bias):
                p.zero_()
            for block in model.blocks:
                block.scale_shift_table.zero_()
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Text ----------------------------------------------------------------------------------------

def pad_features(features: Sequence[torch.Tensor], tokens: int = TEXT_TOKENS) -> torch.Tensor:
    """Unbatched token features [L_i, C] -> [B, tokens, C], zero-padded (diffusers pads umT5's
    output the same way; the transformer has no text mask and sees the zeros)."""
    out = features[0].new_zeros(len(features), tokens, features[0].shape[-1])
    for i, f in enumerate(features):
        f = f[:tokens]
        out[i, :len(f)] = f
    return out


@torch.no_grad()
def prompt_features(text_encoder: TextEncoder, prompts: Sequence[str]) -> List[torch.Tensor]:
    """Unpadded features [L_i, 128] per prompt. Each prompt is encoded alone (its features do
    not depend on its batch mates), by the encoder in eval mode."""
    was_training = text_encoder.training
    text_encoder.eval()
    try:
        return [text_encoder([p])[0].float() for p in prompts]
    finally:
        text_encoder.train(was_training)


def text_embeds(text_encoder: TextEncoder, prompts: Union[str, Sequence[str]],
                tokens: int = TEXT_TOKENS) -> torch.Tensor:
    """``prompt_embeds`` for the pipeline: [batch, tokens, 128] float32, zero-padded."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    return pad_features(prompt_features(text_encoder, prompts), tokens)


# Pipeline ------------------------------------------------------------------------------------

def make_scheduler(kind: str = "flowmatch", shift: float = SHIFT):
    """``flowmatch``: FlowMatchEulerDiscreteScheduler(shift); ``unipc``: UniPCMultistepScheduler
    configured as diffusers configures Wan2.1 (flow prediction, flow sigmas, flow_shift)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
    if kind == "flowmatch":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    if kind == "unipc":
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                       num_train_timesteps=1000, flow_shift=shift)
    raise ValueError(f"unknown scheduler {kind!r}: 'flowmatch' or 'unipc'")


def make_pipeline(transformer, scheduler: str = "flowmatch", shift: float = SHIFT):
    """The stock ``WanPipeline`` around ``transformer`` (no tokenizer, text encoder or VAE)."""
    from diffusers import WanPipeline
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer.eval(),
                       scheduler=make_scheduler(scheduler, shift))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe, text_encoder: TextEncoder, autoencoder: FrameAutoencoder,
             prompt: Union[str, Sequence[str]], seed: int = 0, steps: int = 30,
             guidance_scale: float = 5.0, negative_prompt: str = "", return_latents: bool = False,
             **pipe_kwargs):
    """Video [3, 16, 32, 32] in [-1, 1] (a batch [B, 3, 16, 32, 32] for a list of prompts):
    latents from the pipeline (``output_type="latent"``), decoded by tinywan's autoencoder."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    latents = pipe(prompt_embeds=text_embeds(text_encoder, prompts),
                   negative_prompt_embeds=text_embeds(text_encoder, [negative_prompt] * len(prompts)),
                   num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                   guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed),
                   output_type="latent", **pipe_kwargs).frames
    videos = autoencoder.eval().decode(latents.float())
    if isinstance(prompt, str):
        videos, latents = videos[0], latents[0]
    return (videos, latents) if return_latents else videos


# Weights -------------------------------------------------------------------------------------

class Bed(NamedTuple):
    transformer: nn.Module
    text_encoder: TextEncoder
    autoencoder: FrameAutoencoder


def load_tinywan_parts(tinywan_weights: str = TINYWAN_WEIGHTS):
    """tinywan's shipped text encoder and frame autoencoder (eval mode, frozen)."""
    tiny = TinyWanT2V.from_pretrained(tinywan_weights)
    for module in (tiny.text_encoder, tiny.vae):
        module.eval().requires_grad_(False)
    return tiny.text_encoder, tiny.vae


def load(weights_dir: str = WEIGHTS_DIR, tinywan_weights: str = TINYWAN_WEIGHTS) -> Bed:
    """``WanTransformer3DModel.from_pretrained(weights_dir)`` (fp32) plus tinywan's shipped text
    encoder and autoencoder."""
    from diffusers import WanTransformer3DModel
    transformer = WanTransformer3DModel.from_pretrained(weights_dir, torch_dtype=torch.float32).eval()
    return Bed(transformer, *load_tinywan_parts(tinywan_weights))


@contextlib.contextmanager
def record_calls(transformer, calls: List[dict]):
    """Record each transformer call of a pipeline run: the cache context it ran in (name,
    step index), its timestep and the batch shape (tests and diagnostics)."""
    active = []
    original = transformer.cache_context

    @contextlib.contextmanager
    def cache_context(name, **kwargs):
        active.append((name, kwargs.get("step_index")))
        try:
            with original(name, **kwargs):
                yield
        finally:
            active.pop()

    def hook(module, args, kwargs):
        calls.append({"context": active[-1][0] if active else None,
                      "step_index": active[-1][1] if active else None,
                      "timestep": kwargs["timestep"].detach().clone(),
                      "shape": tuple(kwargs["hidden_states"].shape)})

    transformer.cache_context = cache_context
    handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()
        del transformer.cache_context


# Prompt following ------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(loaded: Bed, n: int = 96, steps: int = 30, guidance_scale: float = 5.0, seed: int = 0,
             batch: int = 16, scheduler: str = "flowmatch") -> dict:
    """tinywan's checker on ``n`` held-out prompts (``tinywan.evaluate.held_out_scenes``: generator
    seeds 10^9 + i, never in training), sampled by the stock pipeline in batches (seed + start per
    batch, as ``tinywan.evaluate`` does); chance over the same items."""
    import time
    from tinywan import checker
    from tinywan.evaluate import held_out_scenes
    items = held_out_scenes(n)
    pipe = make_pipeline(loaded.transformer, scheduler)
    generated, started = [], time.perf_counter()
    for start in range(0, n, batch):
        chunk = items[start:start + batch]
        videos = generate(pipe, loaded.text_encoder, loaded.autoencoder, [c for _, c, _ in chunk], seed=seed + start,
                          steps=steps, guidance_scale=guidance_scale)
        generated += [data.from_model_space(v) for v in videos]
    seconds = time.perf_counter() - started
    scores = [checker.check(v, s) for v, (_, _, s) in zip(generated, items)]
    return {"n": n, "steps": steps, "guidance_scale": guidance_scale, "scheduler": scheduler,
            "seconds_per_video": seconds / n,
            "model": checker.summarize(scores, [checker.chance(s) for _, _, s in items])}


def main(argv=None):
    """python -m tinywan.diffusers_bed [--weights DIR] [--n 96] [--json FILE]: the checker's accuracy."""
    import argparse
    import json
    from tinywan import checker
    p = argparse.ArgumentParser(description="Prompt-following accuracy of the diffusers test bed (tinywan's checker)")
    p.add_argument("--weights", default=WEIGHTS_DIR)
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--scheduler", choices=("flowmatch", "unipc"), default="flowmatch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = evaluate(load(args.weights), args.n, args.steps, scheduler=args.scheduler)
    print(checker.format_summary(result["model"]))
    print(f"{result['seconds_per_video']:.2f} s per video ({args.steps} steps, cond + uncond, batches of 16)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
