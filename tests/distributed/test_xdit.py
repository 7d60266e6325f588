"""The cache under xDiT's real engine: xfuser 0.7.0 with yunchang 0.6.4's Ulysses and ring
attention, two CPU processes over gloo (tests/xdit_cpu.py), through the stand-ins' own
sequence-parallel paths: Wan2.1's ``usp_dit_forward``/``usp_attn_forward`` under FSDP, and
HunyuanVideo's ``parallelize_transformer`` with ``parallel_attention`` (video tokens through
``xFuserLongContextAttention``, the text joined at the rear). For each model at Ulysses 2 and at
ring 2, with the cache from the library:

- cache off (``enable_cache(pipe, None)``) is bitwise the uncached two-process run, and within
  1e-5 of one process;
- EasyCache at tau > 0 computes fewer calls, the same ones on both ranks, and the calls that
  reached the sharded DiT on each rank are exactly the ones the report says were computed;
- agreement under disagreement: rank 1's latent gets noise before the DiT calls of every fourth
  step (a wrapper outside the cache: the statistics the cache sees, and each rank's own wish,
  really differ; noise added inside the cache would not, since the sharded DiT's gathered output
  is the same on every rank whatever each rank fed it); the decisions are still identical on
  both ranks and the sharded model runs at the same calls on both (never on one alone, which
  would hang or corrupt a real collective).

One pair of processes runs every configuration (importing xfuser takes ~10 s a process); xfuser's
parallel state is set up per configuration as Wan2.1's generate.py and HunyuanVideo's
from_pretrained do it.
"""

import importlib.util
import time

import pytest
import torch

from helpers import on_two_ranks
from hosts import HOSTS

# found, not imported: the processes that run xDiT import it (about 10 s), this one never needs to
pytestmark = pytest.mark.skipif(importlib.util.find_spec("xfuser") is None,
                                reason="xDiT's engine: pip install xfuser==0.7.0 yunchang==0.6.4")

CONFIGS = [("wan21", 2, 1), ("wan21", 1, 2), ("hunyuanvideo", 2, 1), ("hunyuanvideo", 1, 2)]
IDS = [f"{model}-{'ulysses' if u > 1 else 'ring'}2" for model, u, r in CONFIGS]
EASYCACHE = {"wan21": dict(threshold=0.5, warmup_steps=3), "hunyuanvideo": dict(threshold=0.3, warmup_steps=3)}
NOISE, NOISY_EVERY = 0.5, 4  # rank 1: fresh noise (x its std) on the latent of every fourth step


def host_named(name):
    return next(h for h in HOSTS if h.name == name)


def build(host, rank, ulysses, ring):
    """The host's multi-process pipeline in the parallel state already set up."""
    if host.name == "hunyuanvideo":
        return host.make("--ulysses-degree", str(ulysses), "--ring-degree", str(ring))
    return host.make_parallel(rank)  # FSDP + usp_dit_forward; sp_size from xfuser's state


def perturbed(args, generator):
    """The DiT call's arguments, noise on the latent (Wan: a list of [C, F, H, W]; HunyuanVideo: a tensor)."""
    def noisy(x):
        return x + NOISE * x.std() * torch.randn(x.shape, generator=generator).to(x.dtype)
    x = args[0]
    return ([noisy(u) for u in x] if isinstance(x, list) else noisy(x),) + tuple(args[1:])


def traced(host, pipe, enable, rank=0, perturb=False):
    """``enable(pipe)`` between two wrappers of the DiT's forward: inside the cache, one records
    at which of the video's calls the sharded DiT ran; outside it, one numbers the calls (and,
    with ``perturb``, adds noise to rank 1's latent every NOISY_EVERY steps: EasyCache's rate k
    normalises a steady perturbation away, a sudden one makes that rank's change jump)."""
    (_, module), = host.dits(pipe).items()
    ran, calls = [], [0]
    inner = module.forward
    module.forward = lambda *a, **k: ran.append(calls[0] - 1) or inner(*a, **k)
    cache = enable(pipe)
    cached = module.forward
    generator = torch.Generator().manual_seed(1234)

    def outer(*args, **kwargs):
        calls[0] += 1
        if perturb and rank == 1 and (calls[0] - 1) // host.branches % NOISY_EVERY == 0:
            args = perturbed(args, generator)
        return cached(*args, **kwargs)
    module.forward = outer
    return cache, ran


def run_config(rank, model, ulysses, ring):
    import easycache.runtime.model as runtime_model
    import xdit_cpu
    import yunchang.kernels
    from xfuser.core.distributed import get_ring_parallel_world_size, get_ulysses_parallel_world_size

    started = time.perf_counter()
    host = host_named(model)
    xdit_cpu.parallel_state(ulysses, ring)
    attention_calls = []
    kernel = yunchang.kernels.flash_attn_forward  # the CPU kernel xfuser's ring step selects
    yunchang.kernels.flash_attn_forward = lambda *a, **k: attention_calls.append(1) or kernel(*a, **k)
    out = {"degrees": [get_ulysses_parallel_world_size(), get_ring_parallel_world_size()]}

    out["plain"] = host.video(build(host, rank, ulysses, ring)).flatten().tolist()
    out["attention_calls"] = len(attention_calls)
    yunchang.kernels.flash_attn_forward = kernel

    pipe = build(host, rank, ulysses, ring)
    cache, ran = traced(host, pipe, lambda p: host.enable(p, None))
    out["off"] = host.video(pipe).flatten().tolist()
    report = cache.report()
    out["off_report"] = [report["dit_calls_computed"], report["dit_calls_total"], report["ranks_agree"],
                         report["world_size"]]
    out["off_ran"] = ran

    pipe = build(host, rank, ulysses, ring)
    cache, ran = traced(host, pipe, lambda p: host.enable(p, "easycache", **EASYCACHE[model]))
    host.video(pipe)
    report = cache.report()
    out["cached"] = {"computed": [c["computed"] for c in report["calls"]], "ran": ran,
                     "reported": report["dit_calls_computed"], "agree": report["ranks_agree"]}

    wishes = []  # [this rank's own wish, the decision agreed], per decision
    agree = runtime_model.agree_across_ranks

    def spy(wants, device):
        wishes.append([bool(wants), agree(wants, device)])
        return wishes[-1][1]
    runtime_model.agree_across_ranks = spy
    try:
        pipe = build(host, rank, ulysses, ring)
        cache, ran = traced(host, pipe, lambda p: host.enable(p, "easycache", **EASYCACHE[model]), rank, perturb=True)
        host.video(pipe)
    finally:
        runtime_model.agree_across_ranks = agree
    report = cache.report()
    out["disagree"] = {"computed": [c["computed"] for c in report["calls"]], "ran": ran, "wishes": wishes,
                       "reported": report["dit_calls_computed"], "agree": report["ranks_agree"]}
    out["seconds"] = time.perf_counter() - started
    return out


def rank_main(rank):
    torch.set_num_threads(1)
    return {"-".join(map(str, config)): run_config(rank, *config) for config in CONFIGS}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    ranks = on_two_ranks(tmp_path_factory.mktemp("xdit"), rank_main)
    single = {}
    for model in {m for m, _, _ in CONFIGS}:
        host = host_named(model)
        single[model] = host.video(host.make()).flatten()
    return ranks, single


def results(runs, config):
    ranks, single = runs
    key = "-".join(map(str, config))
    return ranks[0][key], ranks[1][key], single[config[0]]


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_cache_off_is_the_uncached_run_and_one_process(runs, config):
    mine, other, single = results(runs, config)
    model, ulysses, ring = config
    assert mine["degrees"] == other["degrees"] == [ulysses, ring]
    assert mine["attention_calls"] > 0  # attention went through xfuser's ring step and yunchang's kernel
    for result in (mine, other):
        assert result["off"] == result["plain"]  # bitwise
        calls = len(result["off_ran"])
        assert result["off_report"] == [calls, calls, True, 2] and result["off_ran"] == list(range(calls))
    assert mine["plain"] == other["plain"]  # every rank returns the gathered output
    error = (torch.tensor(mine["plain"]) - single).abs().max().item()
    assert error <= 1e-5, error


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_easycache_skips_the_same_calls_on_both_ranks_as_reported(runs, config):
    mine, other, _ = results(runs, config)
    a, b = mine["cached"], other["cached"]
    assert a["computed"] == b["computed"] and a["agree"] is b["agree"] is True
    assert a["reported"] == sum(a["computed"]) < len(a["computed"])
    for result in (a, b):  # what reached the sharded DiT, call by call, is what the report says
        assert result["ran"] == [i for i, computed in enumerate(result["computed"]) if computed]


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_ranks_that_disagree_still_decide_together(runs, config):
    mine, other, _ = results(runs, config)
    a, b = mine["disagree"], other["disagree"]
    wished = [[w[0] for w in r["wishes"]] for r in (a, b)]
    assert len(wished[0]) == len(wished[1]) and wished[0] != wished[1]  # the ranks really wanted different things
    assert [w[1] for w in a["wishes"]] == [w[1] for w in b["wishes"]]
    # compute if any rank wants to
    assert all(w[1] == (w[0] or w_other[0]) for w, w_other in zip(a["wishes"], b["wishes"]))
    assert a["computed"] == b["computed"] and a["agree"] is b["agree"] is True
    assert a["ran"] == b["ran"] == [i for i, computed in enumerate(a["computed"]) if computed]
    assert a["reported"] == len(a["ran"]) < len(a["computed"])
