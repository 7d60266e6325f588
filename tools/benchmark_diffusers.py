#!/usr/bin/env python3
"""Speed/fidelity benchmark on the diffusers test bed, through the peers' own code: a small
``WanTransformer3DModel`` trained on tinywan's videos (``tinywan/diffusers_bed.py``), sampled by the
stock diffusers ``WanPipeline`` (CFG as separate cond/uncond calls), decoded by tinywan's autoencoder.

Side by side in one process: this library's policies through ``easycache.adapters.diffusers``,
diffusers' own caches through ``transformer.enable_cache(...)`` and cache-dit's DBCache through
``cache_dit.enable_cache(pipe, ...)`` (when cache-dit is importable). Each method's knob is swept
on a grid chosen on a *tuning* set (prompts from generator seeds 2e9 + i, noise seeds 2000 + i;
calibrations run there too); the table is measured on *held-out* prompts (seeds 1e9 + i, never in
training) with their own noise seeds (1000 + i). Each method is read at exactly 2.0x, 2.5x and 3.0x
of computed work on its own frontier (``tinywan.bench_stats``), with the per-video PSNR difference
to EasyCache (the official rule) and its 95% interval.

Computed work is counted, not claimed: every ``nn.Linear`` of the transformer is wrapped (on the
instance, before any cache is enabled, so a cache that skips a module skips its count) and adds
its multiply-accumulates; each attention adds its two products (2 B Lq Lk d) when its key
projection runs. The ideal speed-up is the uncached run's count over the cached run's.
"""

import argparse
import ast
import contextlib
import io
import json
import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from easycache.cli import one_line_errors  # noqa: E402
from easycache.metrics import compare_frames, psnr_from_mse  # noqa: E402
from tinywan import data  # noqa: E402
from tinywan import diffusers_bed as bed  # noqa: E402
from tinywan.args import check_number, check_output_folder  # noqa: E402
from tinywan.bench_stats import Setting, at_speedup, frontier, paired_difference  # noqa: E402
from tinywan.evaluate import held_out_scenes  # noqa: E402

TUNING_SCENE_SEED = 2 * 10 ** 9  # tuning prompts: data.make_video(2e9 + i); held-out: 1e9 + i (evaluate.py)
HELD_OUT_NOISE, TUNING_NOISE = 1000, 2000  # noise seeds: held-out 1000 + i, tuning 2000 + i
TARGETS = (2.0, 2.5, 3.0)
REFERENCE = "easycache"
PSNR_CAP = 99.0  # dB: an identical video counts as this (a mean needs finite values)
PROG = "benchmark_diffusers.py"


# Cases ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    prompt: str
    seed: int


def held_out_cases(n: int) -> List[Case]:
    return [Case(caption, HELD_OUT_NOISE + i) for i, (_, caption, _) in enumerate(held_out_scenes(n))]


def tuning_cases(n: int) -> List[Case]:
    return [Case(data.make_video(TUNING_SCENE_SEED + i, two_object_prob=0.25)[1], TUNING_NOISE + i) for i in range(n)]


# Counting the work ---------------------------------------------------------------------------

class WorkMeter:
    """Multiply-accumulates the transformer really executes, and how many of its blocks' feed-forward
    layers ran. Wraps each ``nn.Linear``'s forward on the instance: the hooks diffusers' caches put on
    blocks, attentions or ``proj_out`` keep the wrapped forward as the "original" they call only when
    they compute, so skipped work is never counted."""

    def __init__(self, transformer: nn.Module):
        self.macs, self.ffn_runs = 0, 0
        self.wrapped: List[nn.Module] = []
        first_ffn = {id(block.ffn.net[0].proj) for block in transformer.blocks}
        attention_keys = {}
        for module in transformer.modules():
            if hasattr(module, "to_q") and hasattr(module, "to_k"):
                attention_keys[id(module.to_q)] = ("q", module)
                attention_keys[id(module.to_k)] = ("k", module)
        for module in transformer.modules():
            if isinstance(module, nn.Linear):
                role = attention_keys.get(id(module), (None, None))
                self._wrap(module, id(module) in first_ffn, *role)

    def _wrap(self, linear: nn.Linear, is_ffn: bool, role: Optional[str], attention: Optional[nn.Module]):
        inner = linear.forward
        meter = self

        def forward(x, *args, **kwargs):
            meter.macs += x.numel() * linear.out_features
            meter.ffn_runs += is_ffn
            if role == "q":
                attention._meter_queries = x.shape[:-1]  # (B, Lq)
            elif role == "k":  # QK^T and AV: 2 B Lq Lk d
                batch, queries = attention._meter_queries
                meter.macs += 2 * batch * queries * x.shape[-2] * linear.out_features
            return inner(x, *args, **kwargs)

        linear.forward = forward
        self.wrapped.append(linear)

    def read(self) -> Tuple[int, int]:
        """(macs, ffn runs) since the last read."""
        out = self.macs, self.ffn_runs
        self.macs, self.ffn_runs = 0, 0
        return out

    def remove(self) -> None:
        for linear in self.wrapped:
            del linear.forward
        self.wrapped = []


# The bench -----------------------------------------------------------------------------------

@dataclass
class Run:
    video: torch.Tensor
    seconds: float
    macs: int
    ffn_runs: int


class Bench:
    """The pipeline, its decoder and text encoder, the step count, the work meter, and what the
    tuning set calibrated (filled by ``calibrate``)."""

    def __init__(self, loaded: bed.Bed, steps: int, guidance: float, scheduler: str = "flowmatch"):
        self.pipe = bed.make_pipeline(loaded.transformer, scheduler)
        self.text_encoder, self.autoencoder = loaded.text_encoder, loaded.autoencoder
        self.steps, self.guidance = steps, guidance
        self.warmup = max(1, round(0.2 * steps))  # EasyCache's official R = 20% of the steps (Wan2.1: 10 of 50)
        self.meter = WorkMeter(self.pipe.transformer)
        self.calibration: Dict[str, object] = {}

    @property
    def transformer(self):
        return self.pipe.transformer

    def generate(self, case: Case) -> Run:
        self.meter.read()
        started = time.perf_counter()
        video = bed.generate(self.pipe, self.text_encoder, self.autoencoder, case.prompt, seed=case.seed,
                             steps=self.steps, guidance_scale=self.guidance)
        seconds = time.perf_counter() - started
        return Run(video, seconds, *self.meter.read())


# Methods -------------------------------------------------------------------------------------

Disable = Callable[[], None]


@dataclass
class Method:
    """One cache: how to enable it at a knob value (returning how to disable it), its knob's
    candidate values (faithful to fast; ``families`` of fixed settings each walk them, the frontier
    takes the best of all), and the value at which it computes everything (``off``)."""

    name: str
    source: str  # "ours", "diffusers", "cache-dit"
    knob: str
    enable: Callable[["Bench", object, dict], Disable]
    candidates: Callable[[float], Sequence]  # all values, faithful -> fast, given --factor
    start: object  # where the tuning walk starts
    families: Tuple[dict, ...] = ({},)
    off: Optional[object] = None
    counted: str = ""
    available: Callable[[], Optional[str]] = lambda: None  # None, or why it cannot run here

    def label(self, value, family: dict) -> str:
        extra = "".join(f", {k} {v}" for k, v in family.items())
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        return f"{self.name} ({self.knob} {shown}{extra})"


def geometric(start: float, low: float, high: float) -> Callable[[float], List[float]]:
    """start * factor^k within [low, high] (factor: --factor)."""
    def values(factor: float):
        out, v = [], start
        while v / factor >= low:
            v /= factor
        while v <= high * (1 + 1e-9):
            out.append(float(f"{v:.4g}"))
            v *= factor
        return out
    return values


def listed(*values) -> Callable[[float], List]:
    return lambda factor: list(values)


def ours(policy: str, knob: str, fixed: Callable[["Bench"], dict] = lambda bench: {}) -> Callable:
    def enable(bench: Bench, value, family: dict) -> Disable:
        from easycache.adapters.diffusers import enable_cache
        cache = enable_cache(bench.pipe, policy, **fixed(bench), **family, **{knob: value})
        return cache.disable
    return enable


def diffusers_config(make: Callable[["Bench", object, dict], object]) -> Callable:
    def enable(bench: Bench, value, family: dict) -> Disable:
        bench.transformer.enable_cache(make(bench, value, family))
        return bench.transformer.disable_cache
    return enable


def cache_dit_config(calibrator: bool) -> Callable:
    def enable(bench: Bench, value, family: dict) -> Disable:
        import cache_dit
        config = cache_dit.DBCacheConfig(residual_diff_threshold=value, num_inference_steps=bench.steps,
                                         Fn_compute_blocks=1, Bn_compute_blocks=0, **family)
        kwargs = {"calibrator_config": cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=1)} if calibrator else {}
        cache_dit.enable_cache(bench.pipe, cache_config=config, **kwargs)
        return lambda: cache_dit.disable_cache(bench.pipe)
    return enable


def cache_dit_missing() -> Optional[str]:
    try:
        import cache_dit  # noqa: F401
    except Exception as error:  # not installed, or it fails to import with these versions
        return f"cache-dit is not importable ({type(error).__name__}: {error})".split("\n")[0]
    return None


def current_timestep(bench: Bench) -> Callable[[], float]:
    return lambda: float(bench.pipe.current_timestep)


def fbc(bench, value, family):
    from diffusers import FirstBlockCacheConfig
    return FirstBlockCacheConfig(threshold=value)


def magcache(bench, value, family):
    from diffusers import MagCacheConfig
    return MagCacheConfig(threshold=value, num_inference_steps=bench.steps,
                          mag_ratios=bench.calibration["diffusers_mag_ratios"], **family)


def taylorseer(identifiers: Optional[List[str]], lite: bool):
    def make(bench, value, family):
        from diffusers import TaylorSeerCacheConfig
        return TaylorSeerCacheConfig(cache_interval=value, use_lite_mode=lite, cache_identifiers=identifiers,
                                     taylor_factors_dtype=torch.float32)
    return make


def seacache(bench, value, family):
    from diffusers import SeaCacheConfig
    return SeaCacheConfig(threshold=value, **family)


def pab(bench, value, family):
    from diffusers import PyramidAttentionBroadcastConfig
    return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=value,
                                           cross_attention_block_skip_range=2 * value,
                                           current_timestep_callback=current_timestep(bench))


def fastercache(guidance_distilled: bool):
    def make(bench, value, family):
        from diffusers import FasterCacheConfig
        return FasterCacheConfig(spatial_attention_block_skip_range=value, is_guidance_distilled=guidance_distilled,
                                 current_timestep_callback=current_timestep(bench))
    return make


WAN_SUBLAYERS = [r"blocks\.\d+\.attn1", r"blocks\.\d+\.attn2", r"blocks\.\d+\.ffn"]
WHOLE = "whole transformer calls skipped: a skipped call counts none of its work"
BLOCKS = "the block stack skipped on a skipped step (embeddings and output head still run)"

METHODS: List[Method] = [
    Method("easycache", "ours", "threshold", ours("easycache", "threshold", lambda b: {"warmup_steps": b.warmup}),
           geometric(0.05, 0.005, 2.0), 0.05, off=0.0, counted=WHOLE),
    Method("easycache-x", "ours", "threshold", ours("easycache-x", "threshold"),
           geometric(0.15, 0.01, 4.0), 0.15, off=0.0, counted=WHOLE),
    Method("uniform", "ours", "every", ours("uniform", "every", lambda b: {"warmup_steps": b.warmup}),
           listed(2, 3, 4, 5, 6, 8, 10), 2, counted=WHOLE),
    Method("teacache", "ours", "threshold",
           ours("teacache", "threshold", lambda b: {"coefficients": b.calibration["teacache_coefficients"]}),
           geometric(0.2, 0.01, 20.0), 0.2, off=0.0, counted=BLOCKS),
    Method("magcache", "ours", "threshold",
           ours("magcache", "threshold", lambda b: {"ratios": b.calibration["magcache_ratios"], "branches": 2}),
           geometric(0.12, 0.005, 5.0), 0.12, families=({"max_skips": 2}, {"max_skips": 6}), off=0.0,
           counted=BLOCKS),
    Method("deltacache", "ours", "interval",
           ours("deltacache", "interval",
                lambda b: {"warmup_steps": b.warmup,
                           "cached": {"blocks": list(range(1, len(b.transformer.blocks) - 1))}}),
           listed(2, 3, 4, 6, 8, 12), 2, counted="between full steps only the first and last blocks run"),
    Method("diffusers-fbc", "diffusers", "threshold", diffusers_config(fbc), geometric(0.05, 0.002, 3.0), 0.05,
           off=0.0, counted="blocks 2..N skipped when the first block's residual barely changed (block 1 always runs)"),
    Method("diffusers-magcache", "diffusers", "threshold", diffusers_config(magcache),
           geometric(0.06, 0.002, 5.0), 0.06, families=({}, {"max_skip_steps": 6}), off=0.0,
           counted="block stack skipped (its own calibration's ratios; embeddings and head still run)"),
    Method("diffusers-taylorseer-lite", "diffusers", "cache_interval",
           diffusers_config(taylorseer(None, lite=True)), listed(2, 3, 4, 5, 6, 8), 2,
           counted="on predicted steps the blocks are skipped (return zeros) and proj_out's output is extrapolated"),
    Method("diffusers-taylorseer", "diffusers", "cache_interval",
           diffusers_config(taylorseer(WAN_SUBLAYERS, lite=False)), listed(2, 3, 4, 5, 6, 8), 2,
           counted="on predicted steps every block's attn1, attn2 and ffn are extrapolated, not run "
                   "(identifiers given: its defaults match no Wan module)"),
    Method("diffusers-seacache", "diffusers", "threshold", diffusers_config(seacache),
           geometric(0.25, 0.01, 20.0), 0.25, families=({}, {"max_consecutive_cached": 5}), off=0.0,
           counted="block stack replaced by the predicted residual on cached steps"),
    Method("diffusers-pab", "diffusers", "spatial skip", diffusers_config(pab), listed(2, 3, 4, 6, 8), 2,
           counted="self-attention (every N calls) and cross-attention (every 2N) reused inside t in (100, 800); "
                   "feed-forward always runs"),
    Method("diffusers-fastercache", "diffusers", "spatial skip", diffusers_config(fastercache(False)),
           listed(2, 3, 4), 2, counted="its CFG branch skip and self-attention reuse"),
    Method("diffusers-fastercache-attn", "diffusers", "spatial skip", diffusers_config(fastercache(True)),
           listed(2, 3, 4, 6), 2,
           counted="self-attention reuse only (is_guidance_distilled=True turns its batched-CFG part off)"),
    Method("cache-dit-dbcache", "cache-dit", "threshold", cache_dit_config(False), geometric(0.08, 0.002, 5.0),
           0.08, families=({}, {"max_warmup_steps": 4}), counted="DBCache F1B0: blocks 2..N skipped on cached steps",
           available=cache_dit_missing),
    Method("cache-dit-dbcache-taylorseer", "cache-dit", "threshold", cache_dit_config(True),
           geometric(0.08, 0.002, 5.0), 0.08, families=({}, {"max_warmup_steps": 4}),
           counted="DBCache F1B0 with its TaylorSeer calibrator (order 1)", available=cache_dit_missing),
]
REGISTRY = {m.name: m for m in METHODS}
NEEDS_CALIBRATION = {"teacache", "magcache", "diffusers-magcache"}


# Calibration (tuning set) --------------------------------------------------------------------

def calibrate(bench: Bench, cases: Sequence[Case], names: Sequence[str]) -> None:
    """Our block-level peers' constants (``calibrate_pipeline``) and diffusers MagCache's ratios
    (its own ``calibrate=True`` mode, whose printed lists are averaged over branches and videos)."""
    if {"teacache", "magcache"} & set(names):
        from easycache.adapters.diffusers import calibrate_pipeline
        from easycache.policies.calibration import merge_calibration
        recorder, merged = calibrate_pipeline(bench.pipe), None
        try:
            for case in cases:
                bench.generate(case)
                merged = merge_calibration(merged, recorder.policies[None])
        finally:
            recorder.disable()
        bench.calibration.update(teacache_coefficients=merged["teacache_coefficients"],
                                 magcache_ratios=merged["magcache_ratios"])
    if "diffusers-magcache" in names:
        from diffusers import MagCacheConfig
        printed = io.StringIO()
        bench.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=bench.steps))
        try:
            with contextlib.redirect_stdout(printed):
                for case in cases:
                    bench.generate(case)
        finally:
            bench.transformer.disable_cache()
        lists = [ast.literal_eval(line) for line in printed.getvalue().splitlines()
                 if line.startswith("[") and not line.startswith("[MagCache]")]
        if not lists:
            raise RuntimeError("diffusers' MagCache calibration printed no ratios")
        bench.calibration["diffusers_mag_ratios"] = [statistics.mean(col) for col in zip(*lists)]


# Sweeps ----------------------------------------------------------------------------------------

@dataclass
class Result:
    """One setting on a set of cases: per-video metrics and counts."""

    label: str
    method: str
    value: object
    family: dict
    work: List[float] = field(default_factory=list)  # MAC share per video
    ffn: List[float] = field(default_factory=list)  # share of block feed-forwards run
    seconds: List[float] = field(default_factory=list)
    mse: List[float] = field(default_factory=list)
    psnr: List[float] = field(default_factory=list)
    psnr_frame: List[float] = field(default_factory=list)
    ssim: List[float] = field(default_factory=list)
    identical_frames: int = 0

    @property
    def ideal(self) -> float:
        return 1 / statistics.mean(self.work)


def run_setting(bench: Bench, method: Method, value, family: dict, case: Case, base: Run, result: Result) -> None:
    disable = method.enable(bench, value, family)
    try:
        run = bench.generate(case)
    finally:
        disable()
    m = compare_frames(base.video, run.video, layout="CTHW", value_range=(-1, 1), clamp=True, lpips=False)
    result.work.append(run.macs / base.macs)
    result.ffn.append(run.ffn_runs / base.ffn_runs)
    result.seconds.append(run.seconds)
    result.mse.append(m.mse_pooled)
    result.psnr.append(min(m.psnr_pooled, PSNR_CAP))
    finite = [p for p in m.psnr_per_frame if math.isfinite(p)]
    result.psnr_frame.append(min(statistics.mean(finite), PSNR_CAP) if finite else PSNR_CAP)
    result.ssim.append(m.ssim_mean)
    result.identical_frames += m.n_identical_frames


def walk(bench: Bench, method: Method, family: dict, cases: Sequence[Case], bases: Sequence[Run],
         low: float, high: float, factor: float, log) -> List[Tuple[object, float]]:
    """The tuning walk: from ``method.start`` down the candidates until the ideal speed-up is below
    ``low`` and up until it is above ``high`` (or stops growing). Returns (value, speed-up) pairs."""
    values = method.candidates(factor)
    index = min(range(len(values)), key=lambda i: abs(math.log(values[i] / method.start)))
    seen: Dict[int, float] = {}

    def probe(i):
        if i not in seen:
            result = Result("", method.name, values[i], family)
            for case, base in zip(cases, bases):
                run_setting(bench, method, values[i], family, case, base, result)
            seen[i] = result.ideal
            log(f"  tuning {method.label(values[i], family)}: {result.ideal:.2f}x")
        return seen[i]

    i = index
    while probe(i) > low and i > 0:
        i -= 1
    i, flat = index, 0
    while probe(i) < high and i + 1 < len(values):
        previous = seen[i]
        i += 1
        flat = flat + 1 if probe(i) < previous * 1.01 else 0
        if flat >= 3:
            break
    return [(values[k], seen[k]) for k in sorted(seen)]


def select(probed: Sequence[Tuple[object, float]], targets: Sequence[float], margin: float = 1.05,
           step: float = 1.35) -> List[object]:
    """The held-out grid from the tuning walk: a chain of values from the fastest one below
    min target / margin to the first one above max target * margin (held-out speed-ups differ a
    little from the tuning ones), each next one the fastest within ``step`` times the last speed-up
    (so every target lies between two settings at most ``step`` apart). A method that never gets
    that fast keeps its fastest value."""
    ordered = sorted(probed, key=lambda p: p[1])
    low, high = min(targets) / margin, max(targets) * margin
    if ordered[-1][1] < low:
        return [ordered[-1][0]]
    below = [p for p in ordered if p[1] <= low]
    chain = [below[-1] if below else ordered[0]]
    while chain[-1][1] < high:
        faster = [p for p in ordered if p[1] > chain[-1][1]]
        if not faster:
            break
        near = [p for p in faster if p[1] <= chain[-1][1] * step]
        chain.append(near[-1] if near else faster[0])
    return [value for value, _ in chain]


# Reading the results ---------------------------------------------------------------------------

def settings_of(results: Sequence[Result]) -> List[Setting]:
    return [Setting(r.label, r.ideal, {"psnr": r.psnr, "mse": r.mse, "psnr_frame": r.psnr_frame, "ssim": r.ssim,
                                       "seconds": r.seconds}) for r in results]


def read_at(results: Sequence[Result], target: float, base_seconds: float) -> Optional[dict]:
    """A method at exactly ``target``: per-video values interpolated between its frontier settings,
    the pooled PSNR from the interpolated MSEs, the wall speed-up between theirs."""
    reading = at_speedup(settings_of(results), target)
    if reading is None:
        return None
    seconds = sum(reading.values("seconds"))
    return {"psnr": reading.values("psnr"), "psnr_pooled": psnr_from_mse(statistics.mean(reading.values("mse"))),
            "psnr_frame": statistics.mean(reading.values("psnr_frame")),
            "ssim": statistics.mean(reading.values("ssim")),
            "wall": base_seconds / seconds, "between": (reading.low.label, reading.high.label, reading.weight)}


def summarize(by_method: Dict[str, List[Result]], base_seconds: float) -> dict:
    readings = {name: {t: read_at(results, t, base_seconds) for t in TARGETS} for name, results in by_method.items()}
    reference = readings.get(REFERENCE, {})
    table = {}
    for name, row in readings.items():
        table[name] = {}
        for t, r in row.items():
            if r is None:
                table[name][t] = None
                continue
            ref = reference.get(t)
            paired = paired_difference(r["psnr"], ref["psnr"]) if ref and name != REFERENCE else None
            table[name][t] = {"psnr_mean": statistics.mean(r["psnr"]), "psnr_pooled": r["psnr_pooled"],
                              "psnr_frame": r["psnr_frame"], "ssim": r["ssim"], "wall": r["wall"],
                              "wall_over_ideal": r["wall"] / t, "between": r["between"],
                              "delta": None if paired is None else vars(paired)}
    return table


def format_compact_table(table: dict, n: int) -> str:
    """One row per method: PSNR and the paired difference to the reference at each target."""
    head = "| method |" + "".join(f" PSNR @{t:g}x | Δ vs {REFERENCE} @{t:g}x [95% CI] (wins) |" for t in TARGETS)
    lines = [head + " wall speed-up @2x / @2.5x / @3x |", "|---" * (2 + 2 * len(TARGETS)) + "|"]
    for name, row in table.items():
        cells = []
        for t in TARGETS:
            r = row[t]
            if r is None:
                cells += ["not reached", "–"]
                continue
            cells += [f"{r['psnr_mean']:.2f}", delta_text(name, r)]
        walls = " / ".join(f"{row[t]['wall']:.2f}x" if row[t] else "–" for t in TARGETS)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {walls} |")
    lines.append(f"\nPSNR: mean over the {n} held-out videos of each video's PSNR, read at exactly that "
                 "computed-work speed-up by linear interpolation between the method's two frontier settings around "
                 f"it. Δ: paired per-video PSNR difference to {REFERENCE} at the same speed-up, mean [95% t "
                 "interval] (videos won).")
    return "\n".join(lines)


def delta_text(name: str, reading: dict) -> str:
    d = reading["delta"]
    if name == REFERENCE:
        return "(reference)"
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] ({d['wins']}/{d['n']})" if d else "–"


def format_long_table(table: dict) -> str:
    """One row per method and target: every metric read there."""
    lines = [f"| method | speed-up | PSNR per-video mean | PSNR pooled | PSNR frame-mean | SSIM | LPIPS | "
             f"Δ PSNR vs {REFERENCE} [95% CI] (wins) | wall speed-up | wall / ideal |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in table.items():
        for t in TARGETS:
            r = row[t]
            if r is None:
                lines.append(f"| {name} | {t:g}x | not reached | | | | | | | |")
                continue
            lines.append(f"| {name} | {t:g}x | {r['psnr_mean']:.2f} | {r['psnr_pooled']:.2f} | {r['psnr_frame']:.2f} | "
                         f"{r['ssim']:.4f} | n/a | {delta_text(name, r)} | {r['wall']:.2f}x | "
                         f"{r['wall_over_ideal']:.2f} |")
    return "\n".join(lines)


def format_settings_table(by_method: Dict[str, List[Result]], base_seconds: float) -> str:
    lines = ["| setting | work computed | blocks' FFN run | ideal speed-up | wall speed-up | wall / ideal | "
             "PSNR pooled | PSNR per-video mean | PSNR frame-mean | SSIM | LPIPS | frontier |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, results in by_method.items():
        front = {s.label for s in frontier(settings_of(results))}
        for r in sorted(results, key=lambda r: r.ideal):
            wall = base_seconds / sum(r.seconds)
            lines.append(f"| {r.label} | {statistics.mean(r.work):.1%} | {statistics.mean(r.ffn):.1%} | "
                         f"{r.ideal:.2f}x | {wall:.2f}x | {wall / r.ideal:.2f} | "
                         f"{psnr_from_mse(statistics.mean(r.mse)):.2f} | {statistics.mean(r.psnr):.2f} | "
                         f"{statistics.mean(r.psnr_frame):.2f} | {statistics.mean(r.ssim):.4f} | n/a | "
                         f"{'yes' if r.label in front else ''} |")
    return "\n".join(lines)


def plot(by_method: Dict[str, List[Result]], path: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot"
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    colours = list(plt.get_cmap("tab10").colors) + ["#000000", "#8c6d31", "#393b79", "#637939", "#d6616b"]
    for index, (name, results) in enumerate(by_method.items()):
        curve = frontier(settings_of(results))
        source = REGISTRY[name].source
        style = "-" if source == "ours" else ("--" if source == "diffusers" else ":")
        ax.plot([s.speedup for s in curve], [s.score for s in curve], style, marker="o", ms=3, label=name,
                color=colours[index % len(colours)], lw=2.0 if name in (REFERENCE, "easycache-x") else 1.2)
    for t in TARGETS:
        ax.axvline(t, color="grey", lw=0.6, alpha=0.5)
    ax.set_xlabel("ideal speed-up (uncached work / computed work, counted)")
    ax.set_ylabel("PSNR vs uncached (dB, per-video mean)")
    ax.set_title("Caches on the diffusers Wan test bed (held-out prompts; frontiers)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


def trajectory_diagnostics(bench: Bench, cases: Sequence[Case], warmup: int) -> dict:
    """The premises the whole-model rules rest on, measured on the conditional branch of uncached
    runs: the transformation rate k_i = mean|v_i - v_{i-1}| / mean|x_i - x_{i-1}| per step, and the
    one-step error (relative L1) of reusing Delta = v - x (EasyCache's estimate) versus reusing v."""
    calls = []

    def hook(module, args, kwargs, output):
        calls.append((kwargs["hidden_states"].detach().float().clone(), output[0].detach().float().clone()))

    handle = bench.transformer.register_forward_hook(hook, with_kwargs=True)
    try:
        per_case = []
        for case in cases:
            calls.clear()
            bench.generate(case)
            per_case.append(calls[0::2])  # cond, uncond, cond, ...: the conditional branch
    finally:
        handle.remove()

    def rel(a, b):
        return ((a - b).abs().mean() / b.abs().mean()).item()

    ks, delta, reuse = [], [], []
    for steps in per_case:
        ks.append([((v - pv).abs().mean() / (x - px).abs().mean()).item()
                   for (px, pv), (x, v) in zip(steps, steps[1:])])
        after = list(zip(steps, steps[1:]))[max(warmup - 1, 0):]
        delta += [rel(x + (pv - px), v) for (px, pv), (x, v) in after]
        reuse += [rel(pv, v) for (px, pv), (x, v) in after]
    k_mean = [statistics.mean(col) for col in zip(*ks)]
    tail = [k for row in ks for k in row[max(warmup - 1, 0):]]
    return {"k_per_step": k_mean, "k_cv_after_warmup": statistics.pstdev(tail) / statistics.mean(tail),
            "err_reuse_delta": statistics.mean(delta), "err_reuse_output": statistics.mean(reuse)}


def format_diagnostics(diag: dict, warmup: int, n: int) -> str:
    ks = ", ".join(f"{k:.2f}" for k in diag["k_per_step"])
    return (f"Test-bed diagnostics (conditional branch, {n} held-out prompts, uncached):\n"
            f"- transformation rate k per step: {ks}\n"
            f"- variation of k after the {warmup}-step warm-up (std/mean): {diag['k_cv_after_warmup']:.2f}\n"
            f"- one-step error, relative L1, after the warm-up: reusing Delta = v - x {diag['err_reuse_delta']:.4f}, "
            f"reusing v {diag['err_reuse_output']:.4f}")


# Main ----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=bed.WEIGHTS_DIR, help="the transformer's folder (from_pretrained)")
    p.add_argument("--held_out", type=int, help="held-out videos for the table (default: 24; --quick: 2)")
    p.add_argument("--tuning", type=int, default=3,
                   help="tuning-set videos: the calibrations run on them (default: 3)")
    p.add_argument("--walk_videos", type=int, default=1,
                   help="of the tuning-set videos, those the knob walks run on (default: 1)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--scheduler", choices=("flowmatch", "unipc"), default="flowmatch")
    p.add_argument("--factor", type=float, default=1.25, help="ratio between neighbouring values of a "
                   "continuous knob in the tuning walk (default: 1.25)")
    p.add_argument("--methods", help=f"comma-separated subset of: {', '.join(REGISTRY)} (default: all)")
    p.add_argument("--quick", action="store_true", help="2 held-out videos, 1 tuning video, 8 steps, the "
                   "start value and one faster value per method: for the tests")
    p.add_argument("--out", default=os.path.join(ROOT, "outputs", "benchmark_diffusers"))
    return p


def check_args(args, fail) -> List[str]:
    if args.quick:
        args.tuning, args.walk_videos, args.steps = 1, 1, 8
    if args.held_out is None:
        args.held_out = 2 if args.quick else 24
    for flag, value, minimum in (("--held_out", args.held_out, 2), ("--tuning", args.tuning, 1),
                                 ("--steps", args.steps, 5)):
        if value < minimum:
            fail(f"{flag} must be >= {minimum}, got {value}")
    if not 1 <= args.walk_videos <= args.tuning:
        fail(f"--walk_videos must lie in 1..{args.tuning} (--tuning), got {args.walk_videos}")
    check_number(args.guidance, "--guidance", fail)
    if not (math.isfinite(args.factor) and args.factor > 1):
        fail(f"--factor must be a number > 1, got {args.factor}")
    names = list(REGISTRY) if not args.methods else [n.strip() for n in args.methods.split(",") if n.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown or not names:
        fail(f"--methods: unknown {', '.join(map(repr, unknown)) or 'empty list'}; known: {', '.join(REGISTRY)}")
    if REFERENCE not in names:
        names.insert(0, REFERENCE)  # the reference of every paired difference
    if not os.path.isfile(os.path.join(args.weights, "config.json")):
        fail(f"--weights {args.weights}: no config.json there (a folder written by save_pretrained; export with "
             "python -m tinywan.train_diffusers --out RUN --export DIR)")
    check_output_folder(args.out, fail)
    return names


def load_bench(args, fail) -> Bench:
    try:
        loaded = bed.load(args.weights)
    except Exception as error:  # diffusers and safetensors raise various types for a broken folder
        fail(f"--weights {args.weights}: cannot load it ({type(error).__name__}: {error})".split("\n")[0])
    return Bench(loaded, args.steps, args.guidance, args.scheduler)


def main(argv=None):
    parser = parse_args(argv)
    fail = one_line_errors(parser, PROG)
    args = parser.parse_args(argv)
    names = check_args(args, fail)
    torch.set_num_threads(1)
    from diffusers.utils import logging as diffusers_logging
    diffusers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=UserWarning)
    bench = load_bench(args, fail)
    os.makedirs(args.out, exist_ok=True)
    started = time.time()

    def log(message):
        print(f"[{(time.time() - started) / 60:5.1f} min] {message}", file=sys.stderr, flush=True)

    skipped = {n: REGISTRY[n].available() for n in names if REGISTRY[n].available()}
    names = [n for n in names if n not in skipped]
    tuning, held_out = tuning_cases(args.tuning), held_out_cases(args.held_out)
    bench.generate(tuning[0])  # warm caches and the allocator before anything is timed
    tuning_bases = [bench.generate(c) for c in tuning]
    log(f"baseline: {tuning_bases[0].macs / 1e9:.2f} GMAC per video, {tuning_bases[0].seconds:.1f} s")
    calibrate(bench, tuning, names)
    log("calibrated on the tuning set")

    grids: Dict[str, List[Tuple[object, dict]]] = {}
    for name in names:
        method = REGISTRY[name]
        try:
            if args.quick:
                values = method.candidates(args.factor)
                start = min(range(len(values)), key=lambda i: abs(math.log(values[i] / method.start)))
                grids[name] = [(v, method.families[0]) for v in values[start:start + 2]]
                continue
            grids[name] = []
            for family in method.families:  # a further family only where the ones before fall short
                probed = walk(bench, method, family, tuning[:args.walk_videos], tuning_bases, TARGETS[0] / 1.1,
                              TARGETS[-1] * 1.1, args.factor, log)
                grids[name] += [(v, family) for v in select(probed, TARGETS)]
                if max(speed for _, speed in probed) >= TARGETS[-1] * 1.05:
                    break
        except Exception as error:  # a peer that fails on this pipeline is reported, not fatal
            skipped[name] = f"{type(error).__name__}: {error}".split("\n")[0]
            log(f"{name} cannot run: {skipped[name]}")
    names = [n for n in names if n in grids]

    results = {n: [Result(REGISTRY[n].label(v, f), n, v, f) for v, f in grids[n]] for n in names}
    log(f"held-out grid: {sum(len(r) for r in results.values())} settings of {len(results)} methods")
    base_seconds, held_out_started = 0.0, time.time()
    work_items = [(n, r) for n in names for r in results[n]]
    for index, case in enumerate(held_out):
        base = bench.generate(case)
        base_seconds += base.seconds
        shift = index % len(work_items)  # rotate the order: drift in machine load hits all methods alike
        for name, result in work_items[shift:] + work_items[:shift]:
            if name in skipped:
                continue
            try:
                run_setting(bench, REGISTRY[name], result.value, result.family, case, base, result)
            except Exception as error:
                skipped[name] = f"{type(error).__name__}: {error}".split("\n")[0]
                log(f"{name} failed on a held-out video: {skipped[name]}")
        if index + 1 < len(held_out) and index >= 1:  # what is there so far, should the run be stopped
            write_outputs(args, bench, {n: results[n] for n in names if n not in skipped}, base_seconds, skipped,
                          None, index + 1, time.time() - started, quiet=True)
        left = (time.time() - held_out_started) / (index + 1) * (len(held_out) - index - 1)
        log(f"[{index + 1}/{len(held_out)}] {case.prompt} (seed {case.seed}); baseline {base.seconds:.1f} s; "
            f"about {left / 60:.0f} min left")
    by_method = {n: results[n] for n in names if n not in skipped}
    diagnostics = trajectory_diagnostics(bench, held_out[:2], bench.warmup)
    write_outputs(args, bench, by_method, base_seconds, skipped, diagnostics, len(held_out), time.time() - started)


def versions() -> dict:
    import diffusers
    out = {"torch": torch.__version__, "diffusers": diffusers.__version__}
    try:
        import cache_dit
        out["cache_dit"] = getattr(cache_dit, "__version__", "?")
    except Exception:
        out["cache_dit"] = None
    return out


def write_outputs(args, bench, by_method, base_seconds, skipped, diagnostics, n, seconds, quiet=False) -> None:
    """results.md, results.json and pareto.png in --out; ``quiet``: a partial write during the run
    (the first ``n`` held-out videos, no diagnostics yet), said so in its first line."""
    table = summarize(by_method, base_seconds)
    v = versions()
    partial = f"PARTIAL: the first {n} of {args.held_out} held-out videos. " if quiet else ""
    header = (f"{partial}diffusers {v['diffusers']}, cache-dit {v['cache_dit'] or 'not installed'}, "
              f"torch {v['torch']}; "
              f"{n} held-out videos, {args.tuning} tuning videos ({args.walk_videos} for the knob walks), "
              f"{args.steps} steps, guidance "
              f"{args.guidance}, {args.scheduler} scheduler, one CPU thread; {seconds / 60:.0f} min.")
    counted = "\n".join(f"- {name}: {REGISTRY[name].counted}" for name in by_method)
    not_run = "\n".join(f"- {name}: {why}" for name, why in skipped.items()) or "- none"
    text = (f"{header}\n\n{format_compact_table(table, n)}\n\nEvery metric at each target (PSNR pooled: from the "
            "MSE pooled over all videos; frame-mean: mean per-frame PSNR, identical frames excluded; wall / ideal: "
            "the wall-clock speed-up over the target):\n\n"
            f"{format_long_table(table)}\n\nAll settings (held-out):\n\n"
            f"{format_settings_table(by_method, base_seconds)}\n\nHow each method's work shows up in the count:\n"
            f"{counted}\n\nNot run:\n{not_run}\n")
    if diagnostics:
        text += f"\n{format_diagnostics(diagnostics, bench.warmup, 2)}\n"
    if not quiet:
        print(text)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    rows = {name: [{"label": r.label, "value": r.value, "family": r.family, "ideal_speedup": r.ideal,
                    "wall_speedup": base_seconds / sum(r.seconds), "work": r.work, "ffn": r.ffn, "psnr": r.psnr,
                    "psnr_frame": r.psnr_frame, "mse": r.mse, "ssim": r.ssim, "seconds": r.seconds}
                   for r in results] for name, results in by_method.items()}
    calibration = {k: v for k, v in bench.calibration.items()}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"arguments": vars(args), "versions": v, "targets": TARGETS, "reference": REFERENCE,
                   "table": {name: {str(t): r for t, r in row.items()} for name, row in table.items()},
                   "settings": rows, "baseline_seconds": base_seconds, "not_run": skipped,
                   "calibration": calibration, "diagnostics": diagnostics, "seconds": seconds}, f, indent=1,
                  default=str)
    problem = plot(by_method, os.path.join(args.out, "pareto.png"))
    if quiet:
        return
    if problem:
        print(f"{PROG}: {problem}", file=sys.stderr)
    print(f"wrote {args.out}/results.md, results.json{'' if problem else ', pareto.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
