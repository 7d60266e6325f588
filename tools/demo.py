#!/usr/bin/env python3
"""CPU demo: the small tinywan text-to-video model, baseline vs EasyCache, same seeds.

The cache is the library's Wan2.1 adapter (easycache.adapters.wan21.enable_easycache, the code
the Wan2.1 drop-in script embeds), which wraps tinywan exactly as it wraps Wan2.1's pipelines. For each
prompt it prints DiT calls computed/total, the wall-clock speed-up and PSNR/SSIM (LPIPS when
its weights are available) of the frames against the uncached video, and writes both videos
(mp4 and GIF) and a side-by-side GIF (baseline | EasyCache | 4x difference).
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from easycache.adapters.wan21 import enable_easycache  # noqa: E402
from easycache.cli import one_line_errors  # noqa: E402
from easycache.metrics import compare_frames  # noqa: E402
from tinywan.args import check_number, check_output_folder, check_prompts, load_pipeline  # noqa: E402

DEFAULT_WEIGHTS = os.path.join(ROOT, "tinywan", "weights", "tinywan.safetensors")
DEFAULT_PROMPTS = ("a large red circle moves right on a plain background",
                   "a small blue square bounces on a gradient background",
                   "a large green triangle moves up on a textured background")
UPSCALE = 8  # 32x32 frames are too small to look at


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> [F, H*UPSCALE, W*UPSCALE, 3] uint8."""
    frames = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    return frames.repeat(UPSCALE, axis=1).repeat(UPSCALE, axis=2)


def write(path: str, frames: np.ndarray, fps: int = 8) -> None:
    """mp4 or GIF, written under a temporary name and renamed when complete."""
    import imageio
    root, ext = os.path.splitext(path)
    tmp = f"{root}.incomplete{ext}"
    if ext == ".gif":
        imageio.mimsave(tmp, list(frames), duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(tmp, list(frames), fps=fps, macro_block_size=1)
    os.replace(tmp, path)


def timed(pipe, prompt, seed, steps):
    started = time.perf_counter()
    video = pipe.generate(prompt, sampling_steps=steps, seed=seed)
    return video, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", action="append", help="a prompt (repeat the flag for several); default: three examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--thresh", type=float, default=0.1, help="EasyCache tau (default: 0.1)")
    parser.add_argument("--ret_steps", type=int, default=6, help="EasyCache warm-up steps (default: 6)")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--out", default=os.path.join(ROOT, "videos", "demo"))
    fail = one_line_errors(parser, "demo.py")
    args = parser.parse_args()
    check_number(args.thresh, "--thresh", fail)
    if args.steps < 2:
        fail(f"--steps must be >= 2, got {args.steps}")
    if not 0 <= args.ret_steps < args.steps:
        fail(f"--ret_steps must lie in 0..{args.steps - 1} (below --steps), got {args.ret_steps}")
    prompts = args.prompt or list(DEFAULT_PROMPTS)
    check_prompts(prompts, fail)
    check_output_folder(args.out, fail)
    torch.set_num_threads(1)
    pipe = load_pipeline(args.weights, fail)
    os.makedirs(args.out, exist_ok=True)

    pipe.generate(prompts[0], sampling_steps=2, seed=args.seed)  # warm up before timing
    print(f"tinywan (CPU), {args.steps} steps, seed {args.seed}: baseline vs EasyCache "
          f"(thresh {args.thresh}, warm-up {args.ret_steps})")
    total_base = total_fast = 0.0
    for index, prompt in enumerate(prompts):
        cache = enable_easycache(pipe, enabled=False)  # counts the baseline's calls
        base, base_seconds = timed(pipe, prompt, args.seed, args.steps)
        cache.disable()
        cache = enable_easycache(pipe, args.thresh, args.ret_steps)
        fast, fast_seconds = timed(pipe, prompt, args.seed, args.steps)
        report = cache.report()
        cache.disable()
        total_base, total_fast = total_base + base_seconds, total_fast + fast_seconds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a missing LPIPS backbone is reported as n/a
            m = compare_frames(base, fast, layout="CTHW", value_range=(-1, 1), clamp=True)
        lpips = f"{m.lpips_mean:.4f}" if m.lpips_mean is not None else "n/a"
        print(f"  {prompt}\n    DiT calls {report['dit_calls_computed']}/{report['dit_calls_total']}   "
              f"{base_seconds:.2f} s -> {fast_seconds:.2f} s ({base_seconds / fast_seconds:.2f}x)   "
              f"PSNR {m.psnr_pooled:.2f} dB (pooled) / {m.psnr_frame_mean:.2f} (frame mean)   "
              f"SSIM {m.ssim_mean:.4f}   LPIPS {lpips}")
        b, f = to_uint8(base), to_uint8(fast)
        diff = np.clip(np.abs(b.astype(np.int16) - f.astype(np.int16)) * 4, 0, 255).astype(np.uint8)
        name = f"{index:02d}"
        for label, frames in (("baseline", b), ("easycache", f)):
            write(os.path.join(args.out, f"{name}_{label}.mp4"), frames)
            write(os.path.join(args.out, f"{name}_{label}.gif"), frames)
        write(os.path.join(args.out, f"{name}_side_by_side.gif"), np.concatenate([b, f, diff], axis=2))
    print(f"  all prompts: {total_base:.2f} s -> {total_fast:.2f} s ({total_base / total_fast:.2f}x wall clock)")
    print(f"  videos: {args.out} (NN_baseline, NN_easycache as mp4 and GIF; NN_side_by_side.gif: "
          "baseline | EasyCache | 4x difference)")


if __name__ == "__main__":
    main()
