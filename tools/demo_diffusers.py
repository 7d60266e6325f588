#!/usr/bin/env python3
"""CPU demo of the diffusers integration: a small WanPipeline (random weights, built from a config:
no download) with and without EasyCache, same seeds; one line turns the cache on.

For each seed it prints the transformer calls computed/total, the wall-clock speed-up and the
fidelity of the decoded frames against the uncached video. The weights are random, so the videos
are noise and the numbers show the integration working, not a model's quality.
"""

import argparse
import os
import sys
import time
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from easycache.adapters.diffusers import enable_easycache  # noqa: E402
from easycache.cli import one_line_errors  # noqa: E402
from easycache.metrics import compare_frames  # noqa: E402
from tinywan.args import check_number  # noqa: E402


def build_pipeline():
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32,
                                        in_channels=16, out_channels=16, text_dim=64, freq_dim=256, ffn_dim=512,
                                        num_layers=8, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=64).eval()
    with torch.no_grad():  # a random net's output jumps with the timestep; a trained one's drifts smoothly
        for parameter in transformer.condition_embedder.time_embedder.parameters():
            parameter.mul_(0.1)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    return WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))


def generate(pipe, seed, steps):
    g = torch.Generator().manual_seed(seed)
    embeds = dict(prompt_embeds=torch.randn(1, 16, 64, generator=g), negative_prompt_embeds=torch.randn(1, 16, 64, generator=g))
    started = time.perf_counter()
    frames = pipe(**embeds, height=64, width=64, num_frames=17, num_inference_steps=steps, guidance_scale=5.0,
                  generator=torch.Generator().manual_seed(seed), output_type="np").frames[0]
    return frames, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, action="append", help="a seed (repeat for several; default: 0 1 2)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--thresh", type=float, default=0.1, help="EasyCache tau (default: 0.1)")
    parser.add_argument("--ret_steps", type=int, default=6, help="EasyCache warm-up steps (default: 6)")
    fail = one_line_errors(parser, "demo_diffusers.py")
    args = parser.parse_args()
    check_number(args.thresh, "--thresh", fail)
    if args.steps < 2:
        fail(f"--steps must be >= 2, got {args.steps}")
    if not 0 <= args.ret_steps < args.steps:
        fail(f"--ret_steps must lie in 0..{args.steps - 1} (below --steps), got {args.ret_steps}")
    torch.set_num_threads(1)
    seeds = args.seed or [0, 1, 2]
    pipe = build_pipeline()
    pipe.set_progress_bar_config(disable=True)
    generate(pipe, seeds[0], 2)  # warm up before timing
    print(f"diffusers WanPipeline (random weights, CPU), {args.steps} steps: uncached vs "
          f"enable_easycache(pipe, threshold={args.thresh}, warmup_steps={args.ret_steps})")
    total_base = total_fast = 0.0
    for seed in seeds:
        base, base_seconds = generate(pipe, seed, args.steps)
        cache = enable_easycache(pipe, threshold=args.thresh, warmup_steps=args.ret_steps)
        fast, fast_seconds = generate(pipe, seed, args.steps)
        report = cache.report()
        cache.disable()
        total_base, total_fast = total_base + base_seconds, total_fast + fast_seconds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a missing LPIPS backbone is reported as n/a
            m = compare_frames(base, fast)
        print(f"  seed {seed}: transformer calls {report['dit_calls_computed']}/{report['dit_calls_total']}   "
              f"{base_seconds:.2f} s -> {fast_seconds:.2f} s ({base_seconds / fast_seconds:.2f}x)   "
              f"PSNR {m.psnr_pooled:.2f} dB   SSIM {m.ssim_mean:.4f}")
    print(f"  all seeds: {total_base:.2f} s -> {total_fast:.2f} s ({total_base / total_fast:.2f}x wall clock)")


if __name__ == "__main__":
    main()
