"""enable_easycache on HunyuanVideo-shaped samplers (the stand-in checkout), in one process."""

import argparse
import os
import sys

import pytest
import torch

from conftest import ROOT, load_script

HY_STANDIN = os.path.join(ROOT, "tests", "hunyuan_standin")
STEPS, SIZE, FRAMES = 12, (64, 64), 5


@pytest.fixture(scope="module")
def hy_script():
    return load_script("hunyuanvideo/easycache_sample_video.py", "easycache_sample_video")


@pytest.fixture(scope="module")
def hy_standin():
    if HY_STANDIN not in sys.path:
        sys.path.insert(0, HY_STANDIN)
    import hyvideo.config
    import hyvideo.inference
    assert hyvideo.config.__file__.startswith(HY_STANDIN)
    return hyvideo


@pytest.fixture
def make_sampler(hy_standin, tmp_path):
    weight = tmp_path / "dit.pt"
    weight.write_bytes(b"stand-in")

    def make(*extra):
        argv = ["--model-base", str(tmp_path), "--dit-weight", str(weight), "--flow-reverse", *extra]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "argv", ["sample_video.py", *argv])
            args = hy_standin.config.parse_args()
        return hy_standin.inference.HunyuanVideoSampler.from_pretrained(str(tmp_path), args=args)
    return make


def predict(sampler, cfg_scale=1.0, seed=0, steps=STEPS, prompt="a cat walks on the grass"):
    out = sampler.predict(prompt=prompt, height=SIZE[0], width=SIZE[1], video_length=FRAMES, seed=seed,
                          infer_steps=steps, guidance_scale=cfg_scale, flow_shift=7.0, embedded_guidance_scale=6.0)
    assert out["samples"].shape == (1, 3, FRAMES, *SIZE)
    return sampler.pipeline.last_latents.clone()


def count_inner_calls(sampler):
    """Record the batch of every call that reaches the transformer's own forward (whatever it is now)."""
    batches = []
    inner = sampler.pipeline.transformer.forward

    def counted(*args, **kwargs):
        batches.append((args[0] if args else kwargs["x"]).shape[0])
        return inner(*args, **kwargs)
    sampler.pipeline.transformer.forward = counted
    return batches


def test_the_standin_dit_keeps_the_forward_contract(make_sampler):
    sampler = make_sampler()
    model = sampler.pipeline.transformer
    x = torch.randn(2, 16, 2, 8, 8)
    cos, sin = sampler.get_rotary_pos_embed(FRAMES, *SIZE)
    kw = dict(text_states=torch.randn(2, 256, 4096), text_mask=torch.ones(2, 256), text_states_2=torch.randn(2, 768),
              freqs_cos=cos, freqs_sin=sin, guidance=torch.full((2,), 6000.0))
    out = model(x, torch.full((2,), 900.0), **kw)
    assert isinstance(out, dict) and out["x"].shape == x.shape
    bare = model(x, torch.full((2,), 900.0), **kw, return_dict=False)
    assert torch.equal(bare, out["x"])
    assert not torch.equal(model(x + 1, torch.full((2,), 900.0), **kw)["x"], out["x"])


@pytest.mark.parametrize("cfg_scale", [1.0, 5.0])
def test_zero_threshold_and_cache_off_are_bitwise_the_baseline(make_sampler, hy_script, cfg_scale):
    baseline = predict(make_sampler(), cfg_scale)
    for kwargs in (dict(threshold=0.0, warmup_steps=0), dict(enabled=False)):
        sampler = make_sampler()
        cache = hy_script.enable_easycache(sampler, **kwargs)
        assert torch.equal(predict(sampler, cfg_scale), baseline)
        report = cache.report()
        assert report["dit_calls_computed"] == report["dit_calls_total"] == report["dit_calls_expected"] == STEPS


@pytest.mark.parametrize("cfg_scale,batch", [(1.0, 1), (5.0, 2)])
def test_cache_lowers_the_call_count_exactly_as_reported(make_sampler, hy_script, cfg_scale, batch):
    sampler = make_sampler()
    batches = count_inner_calls(sampler)
    cache = hy_script.enable_easycache(sampler, threshold=0.3, warmup_steps=3)
    latents = predict(sampler, cfg_scale)
    report = cache.report()
    assert report["dit_calls_total"] == STEPS  # one DiT call per step, cfg or not
    assert len(batches) == report["dit_calls_computed"] < STEPS
    assert set(batches) == {batch}  # cfg > 1: uncond and cond in one call of batch 2, one decision
    assert report["dit_calls_computed"] == sum(c["computed"] for c in report["calls"])
    assert report["ideal_speedup"] == pytest.approx(STEPS / len(batches))
    calls = report["calls"]
    assert [c["step"] for c in calls] == list(range(STEPS)) and {c["branch"] for c in calls} == {"dit"}
    assert all(c["computed"] for c in calls[:3]) and calls[-1]["computed"] and calls[-1]["reason"] == "last"
    assert {c["reason"] for c in calls if not c["computed"]} == {"reuse"}
    assert torch.isfinite(latents).all()
    assert (report["cache"], report["threshold"], report["warmup_steps"]) == ("easycache", 0.3, 3)


@pytest.mark.parametrize("return_dict", [True, False])
def test_reused_step_returns_input_plus_delta_in_the_callers_contract(make_sampler, hy_script, return_dict):
    sampler = make_sampler()
    model = sampler.pipeline.transformer
    cache = hy_script.enable_easycache(sampler, threshold=1e9, warmup_steps=2)
    cache.forward.start_video(5)
    cos, sin = sampler.get_rotary_pos_embed(FRAMES, *SIZE)
    args = (torch.randn(2, 256, 4096), torch.ones(2, 256), torch.randn(2, 768), cos, sin, torch.full((2,), 6e3))
    xs = [torch.randn(2, 16, 2, 8, 8) for _ in range(3)]
    outs = [model(x, torch.full((2,), 900.0 - 100 * i), *args, return_dict) for i, x in enumerate(xs)]
    assert all(isinstance(o, dict) == return_dict for o in outs)
    v = [o["x"] if return_dict else o for o in outs]
    # warm-up computes two steps (k needs two), the third is x2 + (v1 - x1)
    assert [c["computed"] for c in cache.forward.calls] == [True, True, False]
    assert v[2].dtype == v[1].dtype and v[2].shape == xs[2].shape
    assert torch.allclose(v[2], xs[2] + (v[1] - xs[1]), atol=1e-6)
    x1 = xs[2]
    # keyword return_dict is honoured too
    out = model(x1 + 0.01, t=torch.full((2,), 700.0), text_states=args[0], text_mask=args[1], text_states_2=args[2],
                freqs_cos=cos, freqs_sin=sin, guidance=args[5], return_dict=return_dict)
    assert isinstance(out, dict) == return_dict


def test_state_is_reset_per_video(make_sampler, hy_script):
    sampler = make_sampler()
    cache = hy_script.enable_easycache(sampler, threshold=0.3, warmup_steps=3)
    first = predict(sampler)
    first_report = cache.report()
    predict(sampler, seed=5, prompt="something else entirely", steps=8)
    assert cache.report()["num_steps"] == 8 and cache.report()["dit_calls_total"] == 8
    again = predict(sampler)
    assert torch.equal(again, first)
    assert [c["computed"] for c in cache.report()["calls"]] == [c["computed"] for c in first_report["calls"]]


def test_caching_happens_under_an_instance_level_wrapper_like_xdit(make_sampler, hy_script):
    """xDiT binds a forward on the instance that calls the captured one and reads output["x"];
    a class-level patch would be shadowed by it, the instance wrapper sits outside it."""
    sampler = make_sampler()
    model = sampler.pipeline.transformer
    captured, seen = model.forward, []

    def new_forward(self, x, t, text_states=None, text_mask=None, text_states_2=None, freqs_cos=None,
                    freqs_sin=None, guidance=None, return_dict=True):
        output = captured(x, t, text_states, text_mask, text_states_2, freqs_cos, freqs_sin, guidance, return_dict)
        seen.append(1)
        output["x"] = output["x"].clone()
        return output
    model.forward = new_forward.__get__(model)
    cache = hy_script.enable_easycache(sampler, threshold=0.3, warmup_steps=3)
    assert cache.forward.inner_forward.__func__ is new_forward
    predict(sampler)
    report = cache.report()
    assert len(seen) == report["dit_calls_computed"] < STEPS
    cache.disable()
    assert model.forward.__func__ is new_forward and sampler.predict.__func__ is type(sampler).predict


def test_enable_twice_and_foreign_objects_are_refused(make_sampler, hy_script):
    sampler = make_sampler()
    hy_script.enable_easycache(sampler)
    with pytest.raises(RuntimeError, match="already enabled"):
        hy_script.enable_easycache(sampler)
    with pytest.raises(TypeError, match="not a HunyuanVideoSampler"):
        hy_script.enable_easycache(argparse.Namespace(predict=lambda prompt: None))


def test_defaults_are_hunyuans(hy_script):
    import inspect
    params = inspect.signature(hy_script.enable_easycache).parameters
    assert (params["threshold"].default, params["warmup_steps"].default) == (0.025, 5)
