#!/usr/bin/env python3
"""Speed/fidelity benchmark of the cache policies, side by side in one process, on the small
text-to-video model shipped in tinywan/ (a Wan2.1-style DiT trained here on procedural videos).

Every policy the library registers runs through the library's Wan2.1 adapter (the code the Wan2.1
drop-in script embeds), exactly as users run it, at each value of the policy's knob. Per policy
and setting: the computed share of the DiT work,
the wall-clock speed-up over the uncached baseline measured in the same run, that speed-up over
the ideal one (our overhead), PSNR (pooled and per-frame mean), SSIM and LPIPS (when its weights
are available) of the decoded frames against the baseline's. It also prints the test bed's own
diagnostics (the transformation rate k along the trajectory, the one-step error of reusing
Delta = v - x versus reusing v), so a reader can judge how far the ranking transfers to the
real models. This is a small test bed, not Wan2.1 or HunyuanVideo.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from easycache.adapters.wan21 import WAN21_DEFAULTS, calibrate_pipeline, enable_cache  # noqa: E402
from easycache.metrics import LpipsUnavailable, compare_frames, load_lpips, psnr_from_mse  # noqa: E402
from easycache.policies import REGISTRY  # noqa: E402
from easycache.policies.base import complete_settings  # noqa: E402
from easycache.policies.calibration import merge_calibration  # noqa: E402
from tinywan import data  # noqa: E402
from tinywan.sample import TinyWanT2V, trajectory_diagnostics  # noqa: E402

DEFAULT_WEIGHTS = os.path.join(ROOT, "tinywan", "weights", "tinywan.safetensors")


def prompts_for(count: int, seed: int):
    rng = np.random.default_rng(seed)
    return [data.caption_of(data.sample_scene(rng)) for _ in range(count)]


def settings_to_run(calibration, num_layers, warmup, quick):
    """(label, policy name, settings) for every registered policy at each value of its knob. The
    calibrated peers get this test bed's constants; the delta cache runs the first and last block
    always; policies with a warm-up get ``warmup``."""
    runs = []
    for name, spec in sorted(REGISTRY.items()):
        setting, values = spec.knob
        accepted = {flag.setting for flag in spec.flags}
        fixed = {"warmup_steps": warmup} if "warmup_steps" in accepted else {}
        if "coefficients" in accepted:
            if not calibration["teacache_coefficients"]:
                continue
            fixed["coefficients"] = calibration["teacache_coefficients"]
        if "ratios" in accepted:
            fixed["ratios"] = calibration["magcache_ratios"]
        if name == "deltacache":
            fixed["cached"] = {"blocks": list(range(1, num_layers - 1))}
        for value in (values[len(values) // 2:][:1] if quick else values):
            settings = complete_settings(name, WAN21_DEFAULTS, **fixed, **{setting: value})
            runs.append((spec.title(settings), name, settings))
    return runs


def timed_generate(pipe, prompt, seed, steps, repeats):
    """The video and the fastest of ``repeats`` timings (the least disturbed by other work)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        video = pipe.generate(prompt, sampling_steps=steps, seed=seed)
        best = min(best, time.perf_counter() - started)
    return video, best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--prompts", type=int, default=8, help="number of test prompts (default: 8)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=6, help="warm-up steps for EasyCache/uniform/delta (default: 6, 20%%)")
    parser.add_argument("--calibration_videos", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timings per video; the fastest counts (default: 3)")
    parser.add_argument("--quick", action="store_true", help="a few settings, for the tests")
    parser.add_argument("--out", default=os.path.join(ROOT, "outputs", "benchmark"))
    args = parser.parse_args()
    if not os.path.isfile(args.weights):
        sys.exit(f"benchmark.py: error: weights {args.weights} not found (train them: python -m tinywan.train)")
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)

    pipe = TinyWanT2V.from_pretrained(args.weights)
    prompts = prompts_for(args.prompts, seed=1234)

    # constants for the calibrated peers, on prompts the test set does not use
    calibrator = calibrate_pipeline(pipe)
    calibration = None
    for prompt in prompts_for(args.calibration_videos, seed=99):
        pipe.generate(prompt, sampling_steps=args.steps, seed=7)
        calibration = merge_calibration(calibration, calibrator.policies[None])
    calibrator.disable()

    try:
        lpips = load_lpips("alex", device="cpu")
    except LpipsUnavailable as error:
        print(f"benchmark.py: LPIPS not computed: {error}", file=sys.stderr)
        lpips = False
    runs = settings_to_run(calibration, len(pipe.model.blocks), args.warmup, args.quick)
    pipe.generate(prompts[0], sampling_steps=args.steps, seed=0)  # warm caches and allocator before timing
    baseline, base_seconds = {}, 0.0
    results = {label: {"method": method, "seconds": 0.0, "work": [], "metrics": []} for label, method, _ in runs}
    cases = [(p, s) for p in prompts for s in args.seeds]
    for index, (prompt, seed) in enumerate(cases):
        base_video, seconds = timed_generate(pipe, prompt, seed, args.steps, args.repeats)
        base_seconds += seconds
        for label, method, settings in runs:  # interleaved with the baseline: drift hits all alike
            cache = enable_cache(pipe, method, **settings)
            video, seconds = timed_generate(pipe, prompt, seed, args.steps, args.repeats)
            report = cache.report()
            cache.disable()
            r = results[label]
            r["seconds"] += seconds
            r["work"].append(1 / report["ideal_speedup"])
            m = compare_frames(base_video, video, layout="CTHW", value_range=(-1, 1), clamp=True, lpips=lpips)
            r["metrics"].append(m)
        print(f"[{index + 1}/{len(cases)}] {prompt} (seed {seed})", file=sys.stderr, flush=True)

    rows = []
    for label, method, _ in runs:
        r = results[label]
        ideal = 1 / statistics.mean(r["work"])
        speedup = base_seconds / r["seconds"]
        ms = r["metrics"]
        # all videos have one size: the mean of their MSEs is the MSE pooled over the whole set
        finite = [p for m in ms for p in m.psnr_per_frame if np.isfinite(p)]
        lpips_values = [m.lpips_mean for m in ms if m.lpips_mean is not None]
        rows.append({
            "policy": label, "method": method, "computed_share": statistics.mean(r["work"]),
            "ideal_speedup": ideal, "wall_speedup": speedup, "wall_over_ideal": speedup / ideal,
            "psnr_pooled": psnr_from_mse(statistics.mean(m.mse_pooled for m in ms)),
            "psnr_frame_mean": statistics.mean(finite) if finite else float("inf"),
            "identical_frames": sum(m.n_identical_frames for m in ms),
            "ssim": statistics.mean(m.ssim_mean for m in ms),
            "lpips": statistics.mean(lpips_values) if lpips_values else None,
        })

    diagnostics = [trajectory_diagnostics(pipe, p, sampling_steps=args.steps, seed=0) for p in prompts[:2]]
    ks = [[row["k"] for row in d] for d in diagnostics]
    after = [k for d in ks for k in d[args.warmup - 1:]]
    diag = {
        "k_per_step": [statistics.mean(col) for col in zip(*ks)],
        "k_cv_after_warmup": statistics.pstdev(after) / statistics.mean(after),
        "err_reuse_delta": statistics.mean(row["err_reuse_delta"] for d in diagnostics for row in d[args.warmup - 1:]),
        "err_reuse_output": statistics.mean(row["err_reuse_output"] for d in diagnostics for row in d[args.warmup - 1:]),
    }
    write_outputs(args, rows, diag, calibration, len(cases))


def format_table(rows, n_cases):
    lines = ["| policy | DiT work computed | ideal speed-up | wall speed-up | wall / ideal | PSNR pooled | "
             "PSNR frame-mean | SSIM | LPIPS |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lpips = f"{r['lpips']:.4f}" if r["lpips"] is not None else "n/a"
        lines.append(f"| {r['policy']} | {r['computed_share']:.0%} | {r['ideal_speedup']:.2f}x | "
                     f"{r['wall_speedup']:.2f}x | {r['wall_over_ideal']:.2f} | {r['psnr_pooled']:.2f} | "
                     f"{r['psnr_frame_mean']:.2f} | {r['ssim']:.4f} | {lpips} |")
    lines.append(f"\n{n_cases} videos (prompts x seeds); metrics on decoded frames against the uncached video "
                 "of the same prompt and seed: PSNR pooled = from the MSE over all videos; frame-mean = mean "
                 "per-frame PSNR, identical frames (inf) excluded; SSIM and LPIPS averaged per frame.")
    return "\n".join(lines)


def format_diagnostics(diag, warmup):
    ks = ", ".join(f"{k:.2f}" for k in diag["k_per_step"])
    return (f"Test-bed diagnostics (conditional branch, 2 prompts):\n"
            f"- transformation rate k per step: {ks}\n"
            f"- variation of k after the {warmup}-step warm-up (std/mean): {diag['k_cv_after_warmup']:.2f}\n"
            f"- one-step error, relative L1, after warm-up: reusing Delta = v - x {diag['err_reuse_delta']:.4f}, "
            f"reusing v {diag['err_reuse_output']:.4f}")


def write_outputs(args, rows, diag, calibration, n_cases):
    table, diagnostics = format_table(rows, n_cases), format_diagnostics(diag, args.warmup)
    print(table + "\n\n" + diagnostics)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n\n" + diagnostics + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"arguments": vars(args), "rows": rows, "diagnostics": diag,
                   "calibration": {k: v for k, v in calibration.items() if k != "teacache_points"}}, f, indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("benchmark.py: matplotlib not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["wall_speedup"], r["psnr_pooled"]) for r in rows if r["method"] == method)
        ax.plot(*zip(*pts), marker="o", label=method)
    ax.set_xlabel("wall-clock speed-up over the uncached baseline")
    ax.set_ylabel("PSNR vs baseline (dB, pooled)")
    ax.set_title("Cache policies on the tinywan test bed")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "pareto.png"), dpi=110)
    print(f"wrote {args.out}/results.md, results.json, pareto.png", file=sys.stderr)


if __name__ == "__main__":
    main()
