#!/usr/bin/env python3
"""CPU demo: the Wan2.1 drop-in script run twice, baseline and EasyCache, same seed.

It runs wan2_1/easycache_generate.py exactly as a user would, inside the stand-in Wan2.1
checkout tests/wan21_standin (Wan2.1's interfaces with a tiny random-weight DiT), then compares
the two videos with tools/video_metrics.py. A random-weight model shows the mechanics
(decisions, call counts, timings, report, safe output), not the fidelity of a real model.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tools.video_metrics import VideoMetricsError, compare_videos  # noqa: E402


def generate(out_dir, name, extra, args):
    video = os.path.join(out_dir, f"{name}.mp4")
    cmd = [sys.executable, os.path.join(ROOT, "wan2_1", "easycache_generate.py"), "--task", "t2v-1.3B",
           "--size", "832*480", "--ckpt_dir", args.ckpt_dir, "--frame_num", str(args.frame_num),
           "--sample_steps", str(args.steps), "--base_seed", str(args.seed), "--prompt", args.prompt,
           "--save_file", video, "--overwrite", *extra]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, cwd=os.path.join(ROOT, "tests", "wan21_standin"), check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(out_dir, f"{name}.report.json")) as f:
        return video, json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="a red ball bounces on green grass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--frame_num", type=int, default=17)
    parser.add_argument("--thresh", type=float, default=0.5,
                        help="tau (default 0.5: a random-weight model changes far more per step than a real one)")
    parser.add_argument("--ret_steps", type=int, default=5)
    parser.add_argument("--out_dir", default=os.path.join(ROOT, "outputs", "demo"))
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    with tempfile.TemporaryDirectory() as ckpt_dir:  # the stand-in needs a directory, no weights
        args.ckpt_dir = ckpt_dir
        base_video, base = generate(args.out_dir, "baseline", ["--cache", "none"], args)
        fast_video, fast = generate(args.out_dir, "easycache",
                                    ["--thresh", str(args.thresh), "--ret_steps", str(args.ret_steps)], args)

    print("\nWan2.1 script on the tiny random-weight stand-in (CPU): baseline vs EasyCache, same seed")
    for name, r in (("baseline", base), (f"easycache tau={args.thresh}", fast)):
        print(f"  {name:<20} DiT calls {r['dit_calls_computed']:>3}/{r['dit_calls_total']}"
              f"   DiT {r['dit_seconds']:6.2f} s   generate {r['generate_seconds']:6.2f} s")
    print(f"  ideal speed-up {fast['ideal_speedup']:.2f}x   measured: DiT "
          f"{base['dit_seconds'] / fast['dit_seconds']:.2f}x, generate "
          f"{base['generate_seconds'] / fast['generate_seconds']:.2f}x")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a missing LPIPS backbone is reported below
            m = compare_videos(base_video, fast_video, progress=False)
        lpips = f"{m.lpips_mean:.4f}" if m.lpips_mean is not None else "n/a"
        print(f"  fidelity of the mp4s: PSNR {m.psnr_pooled:.2f} dB (pooled), "
              f"{m.psnr_frame_mean:.2f} dB (per-frame mean), SSIM {m.ssim_mean:.4f}, LPIPS {lpips}")
        if m.lpips_mean is None:
            print(f"  LPIPS: {m.lpips_unavailable}")
    except VideoMetricsError as error:
        print(f"  fidelity: not computed ({error})")
    print(f"  videos and reports: {args.out_dir}")


if __name__ == "__main__":
    main()
