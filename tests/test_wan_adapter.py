"""enable_easycache on Wan2.1-shaped pipelines (the stand-in checkout), in one process."""

import types

import pytest
import torch

from conftest import WAN_STANDIN

SIZE, FRAMES, STEPS = (832, 480), 5, 12


@pytest.fixture
def make_pipe(wan_standin, tmp_path):
    _, wan = wan_standin

    def make(cls_name="WanT2V", config="t2v-1.3B"):
        return getattr(wan, cls_name)(config=wan.configs.WAN_CONFIGS[config], checkpoint_dir=str(tmp_path),
                                      device_id=0, rank=0)
    return make


def count_inner_calls(pipe):
    """Count the calls that reach the model's own forward (whatever it is now)."""
    counter = {"calls": 0}
    inner = pipe.model.forward

    def counted(*args, **kwargs):
        counter["calls"] += 1
        return inner(*args, **kwargs)
    pipe.model.forward = counted
    return counter


def t2v(pipe, seed=0, steps=STEPS):
    pipe.generate("a red ball rolls", size=SIZE, frame_num=FRAMES, sampling_steps=steps, seed=seed,
                  offload_model=False)
    return pipe.latents[0].clone()


def test_output_contract_of_the_standin_model(make_pipe):
    pipe = make_pipe()
    x = [torch.randn(4, 2, 15, 26)]
    out = pipe.model(x, t=torch.tensor([500.0]), context=pipe.text_encoder(["a"], "cpu"), seq_len=780)
    assert isinstance(out, list) and out[0].dtype == torch.float32 and out[0].shape == x[0].shape
    out2 = pipe.model([x[0] + 1], t=torch.tensor([500.0]), context=pipe.text_encoder(["a"], "cpu"), seq_len=780)
    assert not torch.equal(out[0], out2[0])


def test_zero_threshold_and_cache_off_are_bitwise_the_baseline(make_pipe, wan_script):
    baseline = t2v(make_pipe())
    for kwargs in (dict(threshold=0.0, warmup_steps=0), dict(enabled=False)):
        pipe = make_pipe()
        cache = wan_script.enable_easycache(pipe, **kwargs)
        assert torch.equal(t2v(pipe), baseline)
        report = cache.report()
        assert report["dit_calls_computed"] == report["dit_calls_total"] == 2 * STEPS


def test_cache_lowers_the_call_count_exactly_as_reported(make_pipe, wan_script):
    pipe = make_pipe()
    counter = count_inner_calls(pipe)
    cache = wan_script.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    latents = t2v(pipe)
    report = cache.report()
    assert report["dit_calls_total"] == 2 * STEPS
    assert counter["calls"] == report["dit_calls_computed"] < 2 * STEPS
    assert report["dit_calls_computed"] == sum(c["computed"] for c in report["calls"])
    assert report["ideal_speedup"] == pytest.approx(2 * STEPS / counter["calls"])
    # cond and uncond follow one decision per step; warm-up and last step computed
    calls = report["calls"]
    assert all(calls[2 * s]["computed"] == calls[2 * s + 1]["computed"] for s in range(STEPS))
    assert [c["branch"] for c in calls[:2]] == ["cond", "uncond"]
    assert all(c["computed"] for c in calls[:6] + calls[-2:])
    assert torch.isfinite(latents).all()


def test_reused_step_returns_input_plus_the_branch_delta(make_pipe, wan_script):
    pipe = make_pipe()
    seen = []
    inner = pipe.model.forward

    def recording(x, **kwargs):
        out = inner(x, **kwargs)
        seen.append((x[0].clone(), out[0].clone()))
        return out
    pipe.model.forward = recording
    cache = wan_script.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    outputs = []
    wrapped = pipe.model.forward

    def outer(x, **kwargs):
        out = wrapped(x, **kwargs)
        outputs.append((x[0].clone(), out[0].clone()))
        return out
    pipe.model.forward = outer
    t2v(pipe)
    calls = cache.report()["calls"]
    first_reuse = next(i for i, c in enumerate(calls) if not c["computed"])
    last_computed = max(i for i in range(first_reuse) if calls[i]["branch"] == calls[first_reuse]["branch"])
    computed_index = sum(c["computed"] for c in calls[:last_computed])
    x_i, v_i = seen[computed_index]
    x_t, out_t = outputs[first_reuse]
    assert torch.allclose(out_t, x_t + (v_i - x_i), atol=1e-6)


def test_caching_works_on_an_instance_level_forward_where_a_class_patch_is_shadowed(make_pipe, wan_script, wan_standin):
    from wan.distributed.xdit_context_parallel import usp_dit_forward
    pipe = make_pipe()
    # what the pipelines do under sequence parallel: bind their own forward on the instance
    pipe.model.forward = types.MethodType(usp_dit_forward, pipe.model)

    # the official scripts patch the class: that forward is never reached
    model_class = type(pipe.model)
    class_calls = []
    original = model_class.forward
    model_class.forward = lambda self, *a, **k: class_calls.append(1) or original(self, *a, **k)
    try:
        t2v(pipe, steps=4)
    finally:
        model_class.forward = original
    assert class_calls == []

    counter = count_inner_calls(pipe)
    cache = wan_script.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    t2v(pipe)
    assert counter["calls"] == cache.report()["dit_calls_computed"] < 2 * STEPS


def test_state_is_reset_per_video(make_pipe, wan_script):
    fresh = make_pipe()
    fresh_cache = wan_script.enable_easycache(fresh, threshold=0.5, warmup_steps=3)
    expected = t2v(fresh, seed=0)
    expected_calls = fresh_cache.report()["calls"]

    pipe = make_pipe()
    cache = wan_script.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    t2v(pipe, seed=1, steps=9)
    assert torch.equal(t2v(pipe, seed=0), expected)
    assert cache.report()["calls"] == expected_calls


def test_state_lives_on_the_instance_not_the_class(make_pipe, wan_script):
    a, b = make_pipe(), make_pipe()
    class_forward, class_generate = type(a.model).forward, type(a).generate
    wan_script.enable_easycache(a, threshold=0.5, warmup_steps=3)
    assert type(a.model).forward is class_forward and type(a).generate is class_generate
    assert "forward" in a.model.__dict__ and "generate" in a.__dict__
    assert "forward" not in b.model.__dict__ and "generate" not in b.__dict__
    baseline = t2v(b)
    cache_b = wan_script.enable_easycache(b, threshold=0.0, warmup_steps=0)
    assert torch.equal(t2v(b), baseline)
    assert cache_b.report()["dit_calls_computed"] == 2 * STEPS


def test_disable_restores_the_pipeline(make_pipe, wan_script):
    pipe = make_pipe()
    baseline = t2v(pipe)
    cache = wan_script.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    assert not torch.equal(t2v(pipe), baseline)
    cache.disable()
    assert "forward" not in pipe.model.__dict__ and "generate" not in pipe.__dict__
    assert torch.equal(t2v(pipe), baseline)
    wan_script.enable_easycache(pipe)
    with pytest.raises(RuntimeError, match="already enabled"):
        wan_script.enable_easycache(pipe)


@pytest.mark.parametrize("cls_name,config", [("WanI2V", "i2v-14B"), ("WanFLF2V", "flf2v-14B"), ("WanVace", "vace-1.3B")])
def test_other_pipelines_cache_too(make_pipe, wan_script, cls_name, config):
    from PIL import Image
    pipe = make_pipe(cls_name, config)
    counter = count_inner_calls(pipe)
    cache = wan_script.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    common = dict(frame_num=FRAMES, sampling_steps=STEPS, seed=0, offload_model=False)
    if cls_name == "WanI2V":
        pipe.generate("a", img, max_area=480 * 832, **common)
    elif cls_name == "WanFLF2V":
        pipe.generate("a", img, img, max_area=480 * 832, **common)
    else:
        v, m, r = pipe.prepare_source([None], [None], [None], FRAMES, SIZE, 0)
        pipe.generate("a", v, m, r, size=SIZE, **common)
    assert counter["calls"] == cache.report()["dit_calls_computed"] < 2 * STEPS
