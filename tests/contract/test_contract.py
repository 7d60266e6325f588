"""The contract every adapter keeps with every registered policy (and with none), as diffusers'
cache tester mixins do for its pipelines: at the policy's exact settings (and with the cache
off, and after disable()) the video is bitwise the uncached one; at its eager settings it skips
calls, and the report counts exactly what ran; state resets per video (several videos in one
process equal one per process); disable() restores the pipeline; outside a DiT call the
pipeline's block lists are themselves; a video the cache did not see is an error."""

import pytest
import torch

from easycache.policies import REGISTRY
from easycache.policies.calibration import MagnitudeRecorder
from easycache.runtime.session import NoCallSeen
from hosts import HOSTS, required_settings

POLICIES = sorted(REGISTRY)


@pytest.fixture(scope="module", params=HOSTS, ids=lambda host: host.name)
def host(request):
    return request.param


@pytest.fixture(scope="module")
def baseline(host):
    return {seed: host.video(host.make(), seed) for seed in (0, 1)}


def settings(host, name, kind):
    spec = REGISTRY[name]
    return {**required_settings(host, spec), **getattr(spec, kind)}


def test_cache_off_counts_every_call_and_is_bitwise_the_baseline(host, baseline):
    pipe = host.make()
    calls = host.count_dit_calls(pipe)
    cache = host.enable(pipe, None)
    assert torch.equal(host.video(pipe), baseline[0])
    report = cache.report()
    assert report["cache"] == "none" and report["warnings"] == []
    assert report["dit_calls_computed"] == report["dit_calls_total"] == len(calls) == host.steps * host.branches


@pytest.mark.parametrize("name", POLICIES)
def test_exact_settings_are_bitwise_the_baseline(host, baseline, name):
    pipe = host.make()
    cache = host.enable(pipe, name, **settings(host, name, "exact"))
    assert torch.equal(host.video(pipe), baseline[0])
    report = cache.report()
    assert report["dit_calls_computed"] == report["dit_calls_total"] == report["dit_calls_expected"]
    if "blocks_run" in report:
        assert report["blocks_run"] == report["blocks_total"]


@pytest.mark.parametrize("name", POLICIES)
def test_eager_settings_skip_and_the_report_counts_what_ran(host, baseline, name):
    pipe = host.make()
    calls, blocks = host.count_dit_calls(pipe), host.count_block_runs(pipe)
    cache = host.enable(pipe, name, **settings(host, name, "eager"))
    latents = host.video(pipe)
    report = cache.report()
    rows = report["calls"]
    total = host.steps * host.branches
    assert report["dit_calls_total"] == len(rows) == total
    assert report["dit_calls_computed"] == sum(r["computed"] for r in rows) < total
    assert [(r["step"], r["branch"]) for r in rows] == [(s, b) for s in range(host.steps)
                                                        for b in cache.session.branches]
    if REGISTRY[name].make.level == "model":
        assert len(calls) == report["dit_calls_computed"]  # a reused call never reaches the DiT
        assert report["ideal_speedup"] == pytest.approx(total / len(calls))
    else:
        assert len(calls) == total  # the DiT runs; blocks are replayed
        assert len(blocks) == report["blocks_run"] < report["blocks_total"]
        assert report["dit_calls_computed"] == sum(r["blocks_run"] == report["blocks_total"] // total for r in rows)
    if "reused_by_estimator" in report:  # every reused call says how it was estimated
        assert sum(report["reused_by_estimator"].values()) == total - report["dit_calls_computed"]
    assert torch.isfinite(latents).all() and not torch.equal(latents, baseline[0])


@pytest.mark.parametrize("name", POLICIES + [None])
def test_state_resets_per_video(host, baseline, name):
    fresh = host.make()
    fresh_cache = host.enable(fresh, name, **(settings(host, name, "eager") if name else {}))
    expected = host.video(fresh, seed=0)
    expected_calls = fresh_cache.report()["calls"]

    pipe = host.make()
    cache = host.enable(pipe, name, **(settings(host, name, "eager") if name else {}))
    host.video(pipe, seed=1, steps=host.steps - 3)
    host.video(pipe, seed=1)
    assert torch.equal(host.video(pipe, seed=0), expected)
    assert cache.report()["calls"] == expected_calls


@pytest.mark.parametrize("name", POLICIES + [None])
def test_disable_restores_the_pipeline(host, baseline, name):
    pipe = host.make()
    host.video(pipe, seed=1)  # whatever a video leaves on the pipeline, it leaves before the cache too
    modules, lists = host.dits(pipe), host.block_lists(pipe)
    before = {"forwards": {n: m.__dict__.get("forward") for n, m in modules.items()}, "pipe": set(vars(pipe)),
              "classes": [type(b) for b in lists]}
    cache = host.enable(pipe, name, **(settings(host, name, "eager") if name else {}))
    host.video(pipe, seed=1)
    cache.disable()
    assert set(vars(pipe)) - {"_easycache"} == before["pipe"] - {"_easycache"}
    assert {n: m.__dict__.get("forward") for n, m in modules.items()} == before["forwards"]
    assert [type(b) for b in lists] == before["classes"]
    assert all("_segment_runners" not in b.__dict__ for b in lists)
    assert torch.equal(host.video(pipe), baseline[0])
    host.enable(pipe, name, **(settings(host, name, "eager") if name else {}))  # and it can be enabled again
    with pytest.raises(RuntimeError, match="already enabled"):
        host.enable(pipe, None)


@pytest.mark.parametrize("name", POLICIES)
def test_block_lists_are_themselves_outside_a_call(host, name):
    pipe = host.make()
    host.enable(pipe, name, **settings(host, name, "eager"))
    host.video(pipe)
    for blocks in host.block_lists(pipe):
        members = list(blocks)
        assert all(isinstance(m, torch.nn.Module) for m in members) and len(members) == len(blocks)
        assert blocks[0] in blocks and list(iter(blocks)) == [blocks[i] for i in range(len(blocks))]


@pytest.mark.parametrize("name", ["easycache", "teacache"])
def test_a_forward_replaced_after_enabling_makes_the_report_an_error(host, name, capsys):
    pipe = host.make()
    cache = host.enable(pipe, name, **settings(host, name, "eager"))
    # e.g. a sequence-parallel forward bound after the cache was enabled: no call reaches the cache
    for name, module in host.dits(pipe).items():
        module.forward = cache.wrappers[name].inner_forward
    host.video(pipe)
    assert "the cache saw no DiT call during this video" in capsys.readouterr().err
    with pytest.raises(NoCallSeen, match="enable the cache after the pipeline is fully built"):
        cache.report()
    report = cache.report(allow_warnings=True)
    assert report["warnings"] and report["dit_calls_total"] == 0


def test_the_calibration_run_is_bitwise_the_baseline(host, baseline):
    pipe = host.make()
    blocks = host.count_block_runs(pipe)
    cache = host.enable(pipe, MagnitudeRecorder(host.branches))
    assert torch.equal(host.video(pipe), baseline[0])
    report = cache.report()
    assert report["cache"] == "calibrate"
    assert report["dit_calls_computed"] == report["dit_calls_total"] == host.steps * host.branches
    assert report["blocks_run"] == report["blocks_total"] == len(blocks)
    assert sum(len(p.ratios) for p in cache.policies.values()) == host.steps * host.branches


@pytest.mark.parametrize("name", ["easycache", "teacache", None])
def test_a_nan_from_the_dit_is_announced_and_reported(host, name, capsys):
    pipe = host.make()
    for module in host.dits(pipe).values():  # under the cache: the DiT itself returns NaN from its 3rd call on
        inner, count = module.forward, [0]

        def poisoned(*args, inner=inner, count=count, **kwargs):
            count[0] += 1
            out = inner(*args, **kwargs)
            if count[0] >= 3:
                for tensor in host.outputs_of(out):
                    tensor.fill_(float("nan"))
            return out
        module.forward = poisoned
    cache = host.enable(pipe, name, **(settings(host, name, "eager") if name else {}))
    host.video(pipe)
    err = capsys.readouterr().err
    assert err.count("easycache: error: the DiT returned NaN or Inf at step") == 1
    report = cache.report()
    first = report["nonfinite_calls"][0]
    assert first["step"] == 1 or (host.branches == 1 and first["step"] == 2)
    assert cache.session.invalid_output().startswith("the DiT returned NaN or Inf")
    fresh = host.make()
    cache = host.enable(fresh, name, **(settings(host, name, "eager") if name else {}))
    host.video(fresh)
    assert cache.report()["nonfinite_calls"] == [] and cache.session.invalid_output() is None


def test_a_policy_using_timesteps_is_told_those_the_dit_receives(host, baseline):
    """σ for the extrapolating policy is the timestep each call passes the DiT (its largest entry:
    Wan2.2 TI2V passes one per token), read here from the DiT's own signature."""
    import inspect
    pipe = host.make()
    received = []
    for module in host.dits(pipe).values():
        inner, signature = module.forward, inspect.signature(module.forward)

        def forward(*args, inner=inner, signature=signature, **kwargs):
            arguments = signature.bind(*args, **kwargs).arguments
            t = arguments.get("t", arguments.get("timestep"))
            received.append(float(torch.as_tensor(t).float().max()))
            return inner(*args, **kwargs)
        module.forward = forward
    cache = host.enable(pipe, "easycache-x", **settings(host, "easycache-x", "exact"))
    located = []
    for policy in cache.policies.values():
        locate = policy.locate
        policy.locate = lambda step, branch, t, locate=locate: located.append(t) or locate(step, branch, t)
    assert torch.equal(host.video(pipe), baseline[0])
    assert len(received) == host.steps * host.branches and located == received
    assert len(set(received)) == host.steps  # a real schedule, one timestep a step
