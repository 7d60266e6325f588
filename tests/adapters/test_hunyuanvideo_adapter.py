"""What is particular to HunyuanVideo (the stand-in checkout), beyond the contract every host keeps:
one call per step whatever the CFG (a batch of 2 with --cfg-scale > 1), the caller's return
contract ({"x": v} or the bare tensor, dtype kept), caching outside an instance-level xDiT
wrapper, and the peers' HunyuanVideo-specific parts (TeaCache's modulated indicator and the
image-token residual across both block stacks, MagCache's ratios, the delta cache's profile)."""

import argparse

import pytest
import torch

from easycache.adapters import hunyuanvideo as hy
from easycache.policies import REGISTRY
from easycache.policies.base import relative_l1
from easycache.policies.calibration import merge_calibration
from hosts import HunyuanVideo, required_settings

HOST = HunyuanVideo()
STEPS = HOST.steps
IDENTITY = [1.0, 0.0]


def test_the_standin_dit_keeps_the_forward_contract():
    sampler = HOST.make()
    model = sampler.pipeline.transformer
    x = torch.randn(2, 16, 2, 8, 8)
    cos, sin = sampler.get_rotary_pos_embed(5, 64, 64)
    kw = dict(text_states=torch.randn(2, 256, 4096), text_mask=torch.ones(2, 256), text_states_2=torch.randn(2, 768),
              freqs_cos=cos, freqs_sin=sin, guidance=torch.full((2,), 6000.0))
    out = model(x, torch.full((2,), 900.0), **kw)
    assert isinstance(out, dict) and out["x"].shape == x.shape
    bare = model(x, torch.full((2,), 900.0), **kw, return_dict=False)
    assert torch.equal(bare, out["x"])
    assert not torch.equal(model(x + 1, torch.full((2,), 900.0), **kw)["x"], out["x"])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_without_true_cfg_exact_settings_are_bitwise_the_baseline_too(name):
    baseline = HOST.video(HOST.make(), cfg_scale=1.0)
    sampler = HOST.make()
    cache = hy.enable_cache(sampler, name, **required_settings(HOST, REGISTRY[name]), **REGISTRY[name].exact)
    assert torch.equal(HOST.video(sampler, cfg_scale=1.0), baseline)
    assert cache.report()["dit_calls_computed"] == STEPS


@pytest.mark.parametrize("cfg_scale,batch", [(1.0, 1), (5.0, 2)])
def test_one_decision_per_call_whatever_the_batch(cfg_scale, batch):
    sampler = HOST.make()
    model = sampler.pipeline.transformer
    batches, inner = [], model.forward
    model.forward = lambda *a, **k: batches.append((a[0] if a else k["x"]).shape[0]) or inner(*a, **k)
    cache = hy.enable_easycache(sampler, threshold=0.3, warmup_steps=3)
    HOST.video(sampler, cfg_scale=cfg_scale)
    report = cache.report()
    assert report["dit_calls_total"] == STEPS  # one DiT call per step, cfg or not
    assert len(batches) == report["dit_calls_computed"] < STEPS
    assert set(batches) == {batch}  # cfg > 1: uncond and cond in one call of batch 2, one decision
    calls = report["calls"]
    assert [c["step"] for c in calls] == list(range(STEPS)) and {c["branch"] for c in calls} == {"dit"}
    assert all(c["computed"] for c in calls[:3]) and calls[-1]["computed"] and calls[-1]["reason"] == "last"
    assert {c["reason"] for c in calls if not c["computed"]} == {"reuse"}
    assert (report["cache"], report["threshold"], report["warmup_steps"]) == ("easycache", 0.3, 3)


@pytest.mark.parametrize("return_dict", [True, False])
def test_reused_step_returns_input_plus_delta_in_the_callers_contract(return_dict):
    sampler = HOST.make()
    model = sampler.pipeline.transformer
    cache = hy.enable_easycache(sampler, threshold=1e9, warmup_steps=2)
    cache.session.start(5)
    cache.wrappers[None].start_video(0, 5)
    cos, sin = sampler.get_rotary_pos_embed(5, 64, 64)
    args = (torch.randn(2, 256, 4096), torch.ones(2, 256), torch.randn(2, 768), cos, sin, torch.full((2,), 6e3))
    xs = [torch.randn(2, 16, 2, 8, 8) for _ in range(3)]
    outs = [model(x, torch.full((2,), 900.0 - 100 * i), *args, return_dict) for i, x in enumerate(xs)]
    assert all(isinstance(o, dict) == return_dict for o in outs)
    v = [o["x"] if return_dict else o for o in outs]
    # warm-up computes two steps (k needs two), the third is x2 + (v1 - x1)
    assert [c["computed"] for c in cache.session.rows] == [True, True, False]
    assert v[2].dtype == v[1].dtype and v[2].shape == xs[2].shape
    assert torch.allclose(v[2], xs[2] + (v[1] - xs[1]), atol=1e-6)
    # keyword return_dict is honoured too
    out = model(xs[2] + 0.01, t=torch.full((2,), 700.0), text_states=args[0], text_mask=args[1], text_states_2=args[2],
                freqs_cos=cos, freqs_sin=sin, guidance=args[5], return_dict=return_dict)
    assert isinstance(out, dict) == return_dict


def test_caching_happens_under_an_instance_level_wrapper_like_xdit():
    """xDiT binds a forward on the instance that calls the captured one and reads output["x"];
    a class-level patch would be shadowed by it, the instance wrapper sits outside it."""
    sampler = HOST.make()
    model = sampler.pipeline.transformer
    captured, seen = model.forward, []

    def new_forward(self, x, t, text_states=None, text_mask=None, text_states_2=None, freqs_cos=None,
                    freqs_sin=None, guidance=None, return_dict=True):
        output = captured(x, t, text_states, text_mask, text_states_2, freqs_cos, freqs_sin, guidance, return_dict)
        seen.append(1)
        output["x"] = output["x"].clone()
        return output
    model.forward = new_forward.__get__(model)
    cache = hy.enable_easycache(sampler, threshold=0.3, warmup_steps=3)
    assert cache.wrappers[None].inner_forward.__func__ is new_forward
    HOST.video(sampler)
    assert len(seen) == cache.report()["dit_calls_computed"] < STEPS
    cache.disable()
    assert model.forward.__func__ is new_forward and sampler.predict.__func__ is type(sampler).predict


def test_foreign_objects_are_refused_and_defaults_are_hunyuans():
    import inspect
    with pytest.raises(TypeError, match="not a HunyuanVideoSampler"):
        hy.enable_easycache(argparse.Namespace(predict=lambda prompt: None))
    params = inspect.signature(hy.enable_easycache).parameters
    assert (params["threshold"].default, params["warmup_steps"].default) == (0.025, 5)
    assert hy.enable_cache(HOST.make(), "easycache").report(allow_warnings=True)["threshold"] == 0.025


# --- the peers' HunyuanVideo-specific parts -----------------------------------------------------

def count_blocks(sampler):
    return HOST.count_block_runs(sampler)


def test_teacache_reuses_the_image_token_residual_of_both_stacks():
    sampler = HOST.make()
    model = sampler.pipeline.transformer
    seen = {"indicator": [], "embedded": [], "head_in": []}
    model.double_blocks[0].img_attn_qkv.register_forward_pre_hook(lambda m, a: seen["indicator"].append(a[0]))
    model.img_in.register_forward_hook(lambda m, a, out: seen["embedded"].append(out))
    model.final_norm.register_forward_pre_hook(lambda m, a: seen["head_in"].append(a[0]))
    runs = count_blocks(sampler)
    cache = hy.enable_teacache(sampler, 0.3, IDENTITY)
    HOST.video(sampler, cfg_scale=1.0)
    report = cache.report()
    computed = [c["computed"] for c in report["calls"]]
    assert computed[0] and computed[-1] and 3 <= sum(computed) < STEPS
    assert report["blocks_run"] == len(runs) == 5 * sum(computed) and report["blocks_total"] == 5 * STEPS
    # the indicator is the first double block's modulated image input, as that block computes it
    assert torch.allclose(cache.policies[None].prev_indicator[0], seen["indicator"][-1], atol=1e-6)
    # a reused step feeds the head image tokens + the residual of the last computed step
    last_reused = max(i for i, c in enumerate(computed) if not c)
    last_computed = max(i for i in range(last_reused) if computed[i])
    residual = seen["head_in"][last_computed] - seen["embedded"][last_computed]
    assert torch.allclose(seen["head_in"][last_reused], seen["embedded"][last_reused] + residual, atol=1e-5)


def test_teacache_eps_by_hand():
    sampler = HOST.make()
    indicators = []
    sampler.pipeline.transformer.double_blocks[0].img_attn_qkv.register_forward_pre_hook(
        lambda m, a: indicators.append(a[0].clone()))
    cache = hy.enable_teacache(sampler, 0.0, [2.0, 0.1])  # every step computed: indicators seen
    HOST.video(sampler, cfg_scale=1.0, steps=4)
    calls = cache.report()["calls"]
    assert [c["eps"] for c in calls[1:3]] == pytest.approx(
        [2 * relative_l1([indicators[i]], [indicators[i - 1]]) + 0.1 for i in (1, 2)], rel=1e-5)


def test_magcache_skips_by_the_calibrated_ratios():
    sampler = HOST.make()
    runs = count_blocks(sampler)
    # retention 0.25 of 12 steps: 0-2 computed; then errors 0.05, 0.1 (sum 0.15 >= 0.12 -> compute) ...
    cache = hy.enable_magcache(sampler, [1.0] * 3 + [0.95] * 9, threshold=0.12, max_skips=6, retention_ratio=0.25)
    HOST.video(sampler, cfg_scale=1.0)
    report = cache.report()
    computed = [c["computed"] for c in report["calls"]]
    # step 3: |1-0.95| = 0.05 reuse; step 4: 0.05 + |1-0.9025| = 0.1475 -> compute; repeating
    assert computed == [True, True, True, False, True, False, True, False, True, False, True, False]
    assert report["blocks_run"] == len(runs) == 5 * sum(computed)
    assert report["max_skips"] == 6 and report["calibrated_steps"] == STEPS


def test_deltacache_runs_the_scheduled_blocks_as_reported():
    sampler = HOST.make()
    runs = count_blocks(sampler)
    cache = hy.enable_deltacache(sampler, [1], [0, 2], warmup_steps=3, interval=3, single_refresh_steps=[5, 9])
    latents = HOST.video(sampler, cfg_scale=1.0)
    report = cache.report()
    # blocks 0 (double) and 3 (single 1) always; double 1 on 0-2, 3, 6, 9; singles 0, 2 on 0-2, 5, 9
    assert report["blocks_run"] == len(runs) == 2 * STEPS + 6 + 2 * 5 == 40
    assert [c["step"] for c in report["calls"] if c["computed"]] == [0, 1, 2, 9]
    assert [c["groups"]["single"] for c in report["calls"]][3:7] == [False, False, True, False]
    assert report["cached_blocks"] == {"double": [1], "single": [0, 2]}
    assert report["groups"] == {"single": {"warmup_steps": 3, "refresh_steps": [5, 9]}}
    assert torch.isfinite(latents).all()
    with pytest.raises(ValueError, match="out of range"):
        hy.enable_deltacache(HOST.make())  # the published profile needs 20 + 40 blocks


def test_calibration_feeds_magcache_and_teacache():
    sampler = HOST.make()
    cache = hy.calibrate_sampler(sampler)
    baseline = HOST.video(HOST.make(), cfg_scale=1.0)
    assert torch.equal(HOST.video(sampler, cfg_scale=1.0), baseline)
    calibration = merge_calibration(None, cache.policies[None])
    ratios = calibration["magcache_ratios"]
    assert len(ratios) == STEPS and ratios[0] == 1.0 and all(r > 0 for r in ratios)
    assert len(calibration["teacache_coefficients"]) == 5 and len(calibration["teacache_points"]["x"]) == STEPS - 1
    cache.disable()
    magcache = hy.enable_magcache(sampler, ratios, threshold=0.5, max_skips=2)
    HOST.video(sampler, cfg_scale=1.0)
    assert magcache.report()["dit_calls_computed"] < STEPS
