#!/usr/bin/env python3
"""Speed/fidelity benchmark of the cache policies on tinywan, with prompts nobody tuned on.

Every policy the library registers runs through the library's Wan2.1 adapter (the code the Wan2.1
drop-in script embeds), exactly as users run it, with its knob swept finely. Two disjoint sets of
prompts and noise seeds, neither seen in training:

* the tuning set chooses what may be chosen: the calibrated peers' constants (TeaCache's
  polynomial, MagCache's ratios) and the knob guide (which setting gives 2x, 2.5x, 3x);
* the held-out set (24 videos by default) gives the table.

Each policy's fidelity is read at exactly 2.0x, 2.5x and 3.0x computed work (total / computed DiT
calls; blocks for block-level policies) by interpolation on its own frontier, per video, so the
difference to the official EasyCache rule is paired: mean, 95% interval and wins. The sweeps share
the uncached prefix of each trajectory through a memo of DiT outputs keyed on the exact input
bytes (the DiT is deterministic; a spot check recomputes some hits and requires them bitwise
equal). Wall-clock speed-up and wall/ideal are measured without the memo on a subset, each policy
at its tuning-set 2.5x setting, interleaved with the baseline. This is a small test bed, not
Wan2.1 or HunyuanVideo.
"""

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from easycache.adapters.wan21 import WAN21_DEFAULTS, calibrate_pipeline, enable_cache  # noqa: E402
from easycache.cli import one_line_errors  # noqa: E402
from easycache.metrics import LpipsUnavailable, compare_frames, load_lpips, psnr_from_mse  # noqa: E402
from easycache.policies import REGISTRY  # noqa: E402
from easycache.policies.base import complete_settings  # noqa: E402
from easycache.policies.calibration import merge_calibration  # noqa: E402
from tinywan import data  # noqa: E402
from tinywan.args import check_output_folder, load_pipeline  # noqa: E402
from tinywan.bench_stats import Setting, at_speedup, paired_difference  # noqa: E402
from tinywan.evaluate import held_out_scenes  # noqa: E402

DEFAULT_WEIGHTS = os.path.join(ROOT, "tinywan", "weights", "tinywan.safetensors")
TARGETS = (2.0, 2.5, 3.0)
REFERENCE = "easycache"  # the official rule: the default every difference is taken against
TUNING_SCENE_SEED = 2 * 10 ** 9  # held-out scenes use 10**9 + i, training banks far below
TUNING_NOISE_SEED, HELD_OUT_NOISE_SEED = 5000, 0
BULKY = ("coefficients", "ratios", "cached")  # settings that are calibrations or profiles, not knobs


# --- what runs --------------------------------------------------------------------------------

def cases(count: int, tuning: bool):
    """(prompt, noise seed) pairs of one set; the two sets share neither scenes nor seeds."""
    if tuning:
        rng = np.random.default_rng(TUNING_SCENE_SEED)
        prompts = [data.caption_of(data.sample_scene(rng)) for _ in range(count)]
        return [(p, TUNING_NOISE_SEED + i) for i, p in enumerate(prompts)]
    return [(caption, HELD_OUT_NOISE_SEED + i) for i, (_, caption, _) in enumerate(held_out_scenes(count))]


def geometric(low: float, high: float, ratio: float = 1.25):
    values, value = [], low
    while value <= high * 1.0001:
        values.append(round(value, 5))
        value *= ratio
    return values


def sweeps(calibration, num_layers: int, warmup: int, quick: bool):
    """{policy: [settings]}: every registered policy over a fine grid of its knob (x1.25 steps for
    thresholds; the discrete knobs over their combinations with a warm-up or skip limit). The
    official rule and uniform reuse get the benchmark's warm-up (20% of the steps, the official
    default's share); the others keep their own defaults."""
    grids = {
        "easycache": [{"threshold": t, "warmup_steps": warmup} for t in geometric(0.02, 0.5)],
        "easycache-x": [{"threshold": t} for t in geometric(0.02, 1.6)],
        "uniform": [{"every": e, "warmup_steps": w} for e in (2, 3, 4, 5) for w in (2, 4, warmup)],
        "teacache": [{"threshold": t} for t in geometric(0.02, 1.0)],
        "magcache": [{"threshold": t, "max_skips": k} for k in (2, 3, 4) for t in geometric(0.03, 0.8, 1.5)],
        "deltacache": [{"interval": i, "warmup_steps": w} for i in (2, 3, 4) for w in (2, 4, warmup)],
    }
    runs = {}
    for name, spec in sorted(REGISTRY.items()):
        fixed = {}
        accepted = {flag.setting for flag in spec.flags}
        if "coefficients" in accepted:
            fixed["coefficients"] = calibration["teacache_coefficients"]
        if "ratios" in accepted:
            fixed["ratios"] = calibration["magcache_ratios"]
        if name == "deltacache":
            fixed["cached"] = {"blocks": list(range(1, num_layers - 1))}
        setting, values = spec.knob
        grid = grids.get(name) or [{setting: v} for v in values]  # a policy added later: its own knob
        if quick:
            grid = grid[len(grid) // 2:][:2]
        runs[name] = [complete_settings(name, WAN21_DEFAULTS, **fixed, **g) for g in grid]
    return runs


class Memo:
    """The DiT's outputs keyed on the exact bytes of its inputs, under the cache (which wraps the
    forward this installs): whole-model policies sweeping one video share its uncached prefix.
    Off (``active`` False) for block-level policies, whose caches work inside the forward. Every
    ``check_every``-th hit is recomputed and must be bitwise equal."""

    def __init__(self, model, check_every: int = 20):
        self.model, self.inner, self.check_every = model, model.forward, check_every
        self.outputs, self.hits, self.misses, self.checked = {}, 0, 0, 0
        self.active = True
        model.forward = self.forward

    def key(self, x, t, context, **kwargs):
        digest = hashlib.sha1()
        for tensor in [*x, t, *context]:
            digest.update(tensor.detach().cpu().numpy().tobytes())
        digest.update(repr(sorted(kwargs.items())).encode())
        return digest.hexdigest()

    def forward(self, x, t, context, **kwargs):
        if not self.active:
            return self.inner(x, t, context, **kwargs)
        key = self.key(x, t, context, **kwargs)
        if key in self.outputs:
            self.hits += 1
            if self.hits % self.check_every == 0:
                again = self.inner(x, t, context, **kwargs)
                if not all(torch.equal(a, b) for a, b in zip(again, self.outputs[key])):
                    raise RuntimeError("the DiT is not deterministic: a memoised output differs when recomputed")
                self.checked += 1
            return [u.clone() for u in self.outputs[key]]
        self.misses += 1
        out = self.inner(x, t, context, **kwargs)
        self.outputs[key] = [u.clone() for u in out]
        return out

    def clear(self):
        self.outputs.clear()  # per video: keys never repeat across videos

    def remove(self):
        self.model.forward = self.inner


# --- measuring --------------------------------------------------------------------------------

def measure(pipe, runs, video_cases, steps, lpips, memo, progress):
    """Per policy and setting: the computed work share and per-video metrics against the baseline."""
    results = {name: [{"settings": s, "work": [], "psnr": [], "psnr_frame_mean": [], "ssim": [], "lpips": []}
                      for s in settings] for name, settings in runs.items()}
    for index, (prompt, seed) in enumerate(video_cases):
        memo.clear()
        base = pipe.generate(prompt, sampling_steps=steps, seed=seed)
        for name, settings in runs.items():
            memo.active = REGISTRY[name].make.level == "model"
            for entry in results[name]:
                cache = enable_cache(pipe, name, **entry["settings"])
                video = pipe.generate(prompt, sampling_steps=steps, seed=seed)
                report = cache.report()
                cache.disable()
                m = compare_frames(base, video, layout="CTHW", value_range=(-1, 1), clamp=True, lpips=lpips)
                entry["work"].append(1 / report["ideal_speedup"])
                entry["psnr"].append(min(m.psnr_pooled, 100.0))  # identical videos: capped, not inf
                entry["psnr_frame_mean"].append(min(m.psnr_frame_mean, 100.0))
                entry["ssim"].append(m.ssim_mean)
                entry["lpips"].append(m.lpips_mean)
        memo.active = True
        progress(f"[{index + 1}/{len(video_cases)}] {prompt} (seed {seed})")
    return results


def as_settings(entries, name):
    return [Setting(REGISTRY[name].title(e["settings"]), 1 / statistics.mean(e["work"]),
                    {k: e[k] for k in ("psnr", "psnr_frame_mean", "ssim")}) for e in entries]


def read_at_targets(results):
    """{policy: {target: Reading or None}} on each policy's own frontier."""
    return {name: {t: at_speedup(as_settings(entries, name), t) for t in TARGETS} for name, entries in results.items()}


def knob_guide(results, readings):
    """{policy: {target: the settings to use}}: the frontier setting nearer the target (the knob
    guide users read; the wall-clock runs use it)."""
    guide = {}
    for name, per_target in readings.items():
        by_label = {REGISTRY[name].title(e["settings"]): e["settings"] for e in results[name]}
        guide[name] = {t: by_label[(r.low if r.weight < 0.5 else r.high).label] if r else None
                       for t, r in per_target.items()}
    return guide


def timed(pipe, prompt, seed, steps, repeats):
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        video = pipe.generate(prompt, sampling_steps=steps, seed=seed)
        best = min(best, time.perf_counter() - started)
    return video, best


def wall_clock(pipe, guide, video_cases, steps, repeats, target=2.5):
    """Per policy at its guide setting for ``target``: wall-clock speed-up over the uncached run
    (each video timed right after its baseline: drift hits both alike) and the ideal one."""
    rows = {}
    for name, per_target in guide.items():
        settings = per_target.get(target)
        if settings is None:
            continue
        base_seconds = cached_seconds = 0.0
        work = []
        for prompt, seed in video_cases:
            _, seconds = timed(pipe, prompt, seed, steps, repeats)
            base_seconds += seconds
            cache = enable_cache(pipe, name, **settings)
            _, seconds = timed(pipe, prompt, seed, steps, repeats)
            work.append(1 / cache.report()["ideal_speedup"])
            cache.disable()
            cached_seconds += seconds
        ideal = 1 / statistics.mean(work)
        rows[name] = {"settings": settings, "wall_speedup": base_seconds / cached_seconds, "ideal_speedup": ideal,
                      "wall_over_ideal": base_seconds / cached_seconds / ideal}
    return rows


# --- reporting --------------------------------------------------------------------------------

def pooled_psnr(reading) -> float:
    """PSNR from the MSE pooled over the videos, each video's MSE read from its interpolated PSNR."""
    return psnr_from_mse(statistics.mean(10 ** (-p / 10) for p in reading.values("psnr")))


def table(readings, n_videos, what):
    lines = [f"{what} ({n_videos} videos): PSNR (dB, pooled MSE) at exactly each speed-up; per video, the "
             f"difference to the official EasyCache rule: mean [95% interval] (videos won)", "",
             "| policy | " + " | ".join(f"{t:.1f}x PSNR | {t:.1f}x vs official" for t in TARGETS) + " |",
             "|---|" + "---|---|" * len(TARGETS)]
    for name, per_target in readings.items():
        cells = []
        for t in TARGETS:
            r, ref = per_target[t], readings[REFERENCE][t]
            if r is None:
                cells += ["not reached", ""]
                continue
            diff = "" if name == REFERENCE or ref is None else str(paired_difference(r.values("psnr"),
                                                                                     ref.values("psnr")))
            cells += [f"{pooled_psnr(r):.2f}", diff]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def other_metrics(readings):
    lines = ["| policy | " + " | ".join(f"{t:.1f}x frame-mean PSNR | {t:.1f}x SSIM" for t in TARGETS) + " |",
             "|---|" + "---|---|" * len(TARGETS)]
    for name, per_target in readings.items():
        cells = []
        for t in TARGETS:
            r = per_target[t]
            cells += ["-", "-"] if r is None else [f"{statistics.mean(r.values('psnr_frame_mean')):.2f}",
                                                   f"{statistics.mean(r.values('ssim')):.4f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def guide_table(guide):
    lines = ["| policy | " + " | ".join(f"{t:.1f}x" for t in TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]
    for name, per_target in guide.items():
        cells = ["-" if s is None else ", ".join(f"{k} {v}" for k, v in s.items() if k not in BULKY)
                 for s in (per_target[t] for t in TARGETS)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wall_table(rows):
    lines = ["| policy (tuning-set 2.5x setting) | ideal speed-up | wall speed-up | wall / ideal |", "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['ideal_speedup']:.2f}x | {r['wall_speedup']:.2f}x | {r['wall_over_ideal']:.2f} |")
    return "\n".join(lines)


def plot(results, readings, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("benchmark.py: matplotlib not installed: no plot", file=sys.stderr)
        return False
    from tinywan.bench_stats import frontier
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, entries in results.items():
        points = as_settings(entries, name)
        curve = frontier(points)
        line, = ax.plot([s.speedup for s in curve], [psnr_from_mse(statistics.mean(10 ** (-p / 10)
                        for p in s.values["psnr"])) for s in curve], marker="o", markersize=3, label=name)
        ax.scatter([s.speedup for s in points], [statistics.mean(s.values["psnr"]) for s in points], s=6,
                   color=line.get_color(), alpha=0.3)
    for t in TARGETS:
        ax.axvline(t, color="grey", lw=0.6, ls=":")
    ax.set_xlim(1, 4)
    ax.set_xlabel("speed-up in DiT work (total / computed calls; blocks for block-level policies)")
    ax.set_ylabel("PSNR vs the uncached video (dB, pooled)")
    ax.set_title("Held-out tinywan videos: each policy's frontier (faint: every setting)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_gifs(pipe, guide, video_cases, steps, folder, target=2.5, fps=8):
    """baseline | official EasyCache | EasyCache-X | 4x |official - baseline| | 4x |X - baseline|, per
    prompt, both policies at their tuning-set setting for ``target``."""
    import imageio
    paths = []
    if guide[REFERENCE][target] is None or guide["easycache-x"][target] is None:
        print(f"benchmark.py: no GIFs: a policy did not reach {target}x on the tuning set", file=sys.stderr)
        return paths
    for index, (prompt, seed) in enumerate(video_cases):
        videos = [pipe.generate(prompt, sampling_steps=steps, seed=seed)]
        for name in (REFERENCE, "easycache-x"):
            cache = enable_cache(pipe, name, **guide[name][target])
            videos.append(pipe.generate(prompt, sampling_steps=steps, seed=seed))
            cache.disable()
        frames = [((v.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy() for v in videos]
        diffs = [np.clip(np.abs(f.astype(np.int16) - frames[0].astype(np.int16)) * 4, 0, 255).astype(np.uint8)
                 for f in frames[1:]]
        panel = np.concatenate(frames + diffs, axis=2)
        panel = panel.repeat(3, axis=1).repeat(3, axis=2)  # 32 px frames are too small to see
        path = os.path.join(folder, f"easycache_x_{index:02d}.gif")
        imageio.mimsave(path, list(panel), duration=1000 / fps, loop=0)
        paths.append(path)
    return paths


# --- the command ------------------------------------------------------------------------------

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--held_out", type=int, default=24, help="held-out videos for the table (default: 24)")
    parser.add_argument("--tuning", type=int, default=12, help="tuning-set videos (default: 12)")
    parser.add_argument("--calibration_videos", type=int, default=4,
                        help="tuning-set videos the calibrated peers' constants come from (default: 4)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=6, help="warm-up of the official rule and uniform reuse "
                        "(default: 6, 20%% of the steps like the official 10 of 50)")
    parser.add_argument("--wall_videos", type=int, default=4, help="held-out videos timed without the memo")
    parser.add_argument("--repeats", type=int, default=3, help="timings per video; the fastest counts (default: 3)")
    parser.add_argument("--gifs", metavar="FOLDER", help="also write side-by-side GIFs of three held-out videos")
    parser.add_argument("--quick", action="store_true", help="two settings per policy, for the tests")
    parser.add_argument("--out", default=os.path.join(ROOT, "outputs", "benchmark"))
    fail = one_line_errors(parser, "benchmark.py")
    args = parser.parse_args()
    for flag, minimum in (("held_out", 2), ("tuning", 1), ("calibration_videos", 1), ("steps", 2),
                          ("wall_videos", 0), ("repeats", 1)):
        if getattr(args, flag) < minimum:
            fail(f"--{flag} must be >= {minimum}, got {getattr(args, flag)}")
    if args.calibration_videos > args.tuning:
        fail(f"--calibration_videos {args.calibration_videos} must not exceed --tuning {args.tuning}")
    if not 0 <= args.warmup < args.steps:
        fail(f"--warmup must lie in 0..{args.steps - 1} (below --steps), got {args.warmup}")
    check_output_folder(args.out, fail)
    if args.gifs:
        check_output_folder(args.gifs, fail)
    return args, fail


def main():
    args, fail = parse_args()
    torch.set_num_threads(1)
    pipe = load_pipeline(args.weights, fail)
    os.makedirs(args.out, exist_ok=True)
    progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    tuning, held_out = cases(args.tuning, tuning=True), cases(args.held_out, tuning=False)

    calibrator = calibrate_pipeline(pipe)  # the calibrated peers' constants, from the tuning set only
    calibration = None
    for prompt, seed in tuning[:args.calibration_videos]:
        pipe.generate(prompt, sampling_steps=args.steps, seed=seed)
        calibration = merge_calibration(calibration, calibrator.policies[None])
    calibrator.disable()
    try:
        lpips = load_lpips("alex", device="cpu")
    except LpipsUnavailable as error:
        progress(f"benchmark.py: LPIPS not computed: {error}")
        lpips = False

    runs = sweeps(calibration, len(pipe.model.blocks), args.warmup, args.quick)
    progress(f"{sum(map(len, runs.values()))} settings x ({len(tuning)} tuning + {len(held_out)} held-out) videos")
    memo = Memo(pipe.model)
    results = {"tuning": measure(pipe, runs, tuning, args.steps, lpips, memo, progress),
               "held_out": measure(pipe, runs, held_out, args.steps, lpips, memo, progress)}
    memo.remove()
    readings = {name: read_at_targets(r) for name, r in results.items()}
    guide = knob_guide(results["tuning"], readings["tuning"])
    pipe.generate(held_out[0][0], sampling_steps=args.steps, seed=0)  # warm the allocator before timing
    wall = wall_clock(pipe, guide, held_out[:args.wall_videos], args.steps, args.repeats) if args.wall_videos else {}

    text = "\n\n".join([
        table(readings["held_out"], len(held_out), "Held-out set"),
        other_metrics(readings["held_out"]),
        table(readings["tuning"], len(tuning), "Tuning set"),
        "Knob guide (from the tuning set: the frontier setting nearest each speed-up):\n\n" + guide_table(guide),
        f"Wall clock ({args.wall_videos} held-out videos, no memo, fastest of {args.repeats}):\n\n" + wall_table(wall),
        f"DiT memo: {memo.hits} hits, {memo.misses} computed, {memo.checked} hits recomputed and bitwise equal."])
    print(text)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text + "\n")
    summary = {
        "arguments": vars(args), "targets": TARGETS, "reference": REFERENCE,
        "sets": {"tuning": tuning, "held_out": held_out},
        "readings": {set_name: {name: {str(t): None if r is None else {
            "psnr_pooled": pooled_psnr(r), "psnr_per_video": r.values("psnr"),
            "between": [r.low.label, r.high.label], "weight": r.weight} for t, r in per.items()}
            for name, per in set_readings.items()} for set_name, set_readings in readings.items()},
        "settings": {set_name: {name: [{"settings": {k: v for k, v in e["settings"].items()
                                                     if k not in ("coefficients", "ratios")},
                                        "speedup": 1 / statistics.mean(e["work"]), "psnr": e["psnr"]}
                                       for e in entries] for name, entries in set_results.items()}
                     for set_name, set_results in results.items()},
        "guide": guide, "wall_clock": wall,
        "memo": {"hits": memo.hits, "computed": memo.misses, "checked": memo.checked},
        "calibration": {k: v for k, v in calibration.items() if k != "teacache_points"},
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    wrote = ["results.md", "results.json"] + (["pareto.png"] if plot(results["held_out"], readings["held_out"],
                                                                      os.path.join(args.out, "pareto.png")) else [])
    progress(f"wrote {', '.join(os.path.join(args.out, w) for w in wrote)}")
    if args.gifs:
        os.makedirs(args.gifs, exist_ok=True)
        for path in write_gifs(pipe, guide, held_out[:3], args.steps, args.gifs):
            progress(f"wrote {path}")


if __name__ == "__main__":
    main()
