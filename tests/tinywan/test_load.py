"""Load: 50 videos in one process with the cache enabled once. Each video's decisions and
output must equal those of a process that has run no video yet, and resident memory must stop
growing after the first few videos (a cache that kept per-video state would grow or drift)."""

import gc
import multiprocessing
import os

import pytest
import torch

from tinywan import data
from tinywan.evaluate import held_out_scenes

from easycache.adapters.wan21 import enable_cache
from easycache.policies.base import REGISTRY, make_policy

WEIGHTS = os.path.join(os.path.dirname(data.__file__), "weights", "tinywan.safetensors")
VIDEOS = 50
SETTLE = 5  # videos after which resident memory must be flat
# Allocator noise (glibc arenas, torch's CPU caching) measured at under 2 MiB over 45 videos;
# one leaked video is 8x16x8x8 fp32 latents, several per step, so a leak crosses this in a few videos.
RSS_SLACK_BYTES = 6 * 2 ** 20

_pipe = None  # loaded once in the parent; forked children inherit it without having run a video


def plan():
    """Varied prompts, seeds and step counts, so a state leak between videos would show."""
    prompts = [caption for _, caption, _ in held_out_scenes(VIDEOS)]
    return [(prompts[i], 100 + i, (12, 20, 16)[i % 3]) for i in range(VIDEOS)]


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(pipe, cache, prompt, seed, steps):
    video = pipe.generate(prompt, sampling_steps=steps, seed=seed)
    report = cache.report()
    return [row["computed"] for row in report["calls"]], video


def fresh_video(job):
    """In a forked child of a process that never generated: enable, run one video."""
    torch.set_num_threads(1)
    cache = enable_cache(_pipe, make_policy("easycache", threshold=0.1, warmup_steps=1))
    decisions, video = run(_pipe, cache, *job)
    return decisions, video.numpy().tobytes()


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.exists("/proc/self/statm"),
                    reason="needs fork and /proc (Linux)")
def test_fifty_videos_with_one_enable_match_fresh_processes_and_memory_stays_flat():
    global _pipe
    from tinywan.sample import TinyWanT2V
    torch.set_num_threads(1)
    _pipe = TinyWanT2V.from_pretrained(WEIGHTS)
    jobs = plan()
    with multiprocessing.get_context("fork").Pool(1, maxtasksperchild=1) as pool:
        fresh = pool.map(fresh_video, jobs, chunksize=1)

    cache = enable_cache(_pipe, make_policy("easycache", threshold=0.1, warmup_steps=1))
    rss = []
    for index, job in enumerate(jobs):
        decisions, video = run(_pipe, cache, *job)
        assert decisions == fresh[index][0], f"video {index}: decisions differ from a fresh process"
        assert video.numpy().tobytes() == fresh[index][1], f"video {index}: output differs from a fresh process"
        del video
        gc.collect()
        rss.append(resident_bytes())
    cached = sum(d.count(False) for d, _ in fresh)
    assert cached > VIDEOS, "the cache must actually skip calls for this test to mean anything"
    growth = max(rss[SETTLE:]) - rss[SETTLE - 1]
    assert growth < RSS_SLACK_BYTES, f"resident memory grew {growth / 2 ** 20:.1f} MiB after video {SETTLE}: {rss}"


def tensors_in(value, seen):
    """Every tensor reachable through a policy's attributes (lists, tuples, dicts)."""
    if isinstance(value, torch.Tensor):
        if id(value) not in seen:
            seen.add(id(value))
            yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item, seen)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item, seen)


# What each policy keeps between steps, by hand from its definition, with two CFG branches.
# Whole-model caches count in latents (the DiT's input): EasyCache x_{t-1}, x_i, v_i on the
# decision branch plus one transformation vector per branch; uniform one delta per branch.
# Block-level caches count in hidden states (tokens x width): one block-stack residual per
# branch, plus TeaCache's previous time embedding (width numbers).
HELD = {"easycache": (5, 0, 0), "uniform": (2, 0, 0), "magcache": (0, 2, 0), "teacache": (0, 2, 1)}


@pytest.mark.parametrize("name", sorted(HELD))
def test_the_cache_holds_what_its_definition_says_and_no_more_after_many_videos(name):
    from tinywan.sample import TinyWanT2V
    torch.set_num_threads(1)
    pipe = TinyWanT2V.from_pretrained(WEIGHTS)
    settings = dict(REGISTRY[name].eager)
    if name == "magcache":
        settings["ratios"] = [1.0] * 24
    if name == "teacache":
        settings["coefficients"] = [1.0, 0.0]
    cache = enable_cache(pipe, make_policy(name, **settings))
    channels, frames, height, width = pipe.latent_shape
    latent = channels * frames * height * width
    pt, ph, pw = pipe.model.patch_size
    width_ = pipe.model.dim
    hidden = frames // pt * (height // ph) * (width // pw) * width_
    latents, hiddens, widths = HELD[name]
    for seed in range(6):
        pipe.generate("a small blue square moves up on a plain background", sampling_steps=12, seed=seed)
        assert cache.report()["dit_calls_computed"] < 24, "the cache must reuse something"
        held = sum(t.numel() for t in tensors_in(vars(cache.policies[None]), set()))
        assert held == latents * latent + hiddens * hidden + widths * width_, (seed, held, latent, hidden)
