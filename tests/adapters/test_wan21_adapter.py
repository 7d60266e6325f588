"""What is particular to Wan2.1 (the stand-in checkout), beyond the contract every host keeps:
one decision per step for both CFG branches, reuse as x + the branch's own delta, caching on
an instance-level forward where a class patch is shadowed, every pipeline class, and the peers'
Wan-specific parts (TeaCache's time-embedding indicator and published polynomials, the delta
cache's foreground blocks)."""

import types

import pytest
import torch

from easycache.adapters import wan21
from easycache.adapters.wan21 import WAN21_TEACACHE_COEFFICIENTS
from easycache.policies.base import relative_l1
from hosts import Wan21

HOST = Wan21()
STEPS = HOST.steps
IDENTITY = [1.0, 0.0]


def test_output_contract_of_the_standin_model():
    pipe = HOST.make()
    x = [torch.randn(4, 2, 15, 26)]
    out = pipe.model(x, t=torch.tensor([500.0]), context=pipe.text_encoder(["a"], "cpu"), seq_len=780)
    assert isinstance(out, list) and out[0].dtype == torch.float32 and out[0].shape == x[0].shape
    out2 = pipe.model([x[0] + 1], t=torch.tensor([500.0]), context=pipe.text_encoder(["a"], "cpu"), seq_len=780)
    assert not torch.equal(out[0], out2[0])


def test_both_branches_follow_one_decision_per_step():
    pipe = HOST.make()
    cache = wan21.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    HOST.video(pipe)
    calls = cache.report()["calls"]
    assert all(calls[2 * s]["computed"] == calls[2 * s + 1]["computed"] for s in range(STEPS))
    assert [c["branch"] for c in calls[:2]] == ["cond", "uncond"]
    assert all(c["computed"] for c in calls[:6] + calls[-2:])
    assert {"step", "branch", "computed", "k", "eps", "E", "reason"} <= set(calls[8])


def test_reused_step_returns_input_plus_the_branch_delta():
    pipe = HOST.make()
    seen = []
    inner = pipe.model.forward

    def recording(x, **kwargs):
        out = inner(x, **kwargs)
        seen.append((x[0].clone(), out[0].clone()))
        return out
    pipe.model.forward = recording
    cache = wan21.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    outputs = []
    wrapped = pipe.model.forward

    def outer(x, **kwargs):
        out = wrapped(x, **kwargs)
        outputs.append((x[0].clone(), out[0].clone()))
        return out
    pipe.model.forward = outer
    HOST.video(pipe)
    calls = cache.report()["calls"]
    first_reuse = next(i for i, c in enumerate(calls) if not c["computed"])
    last_computed = max(i for i in range(first_reuse) if calls[i]["branch"] == calls[first_reuse]["branch"])
    computed_index = sum(c["computed"] for c in calls[:last_computed])
    x_i, v_i = seen[computed_index]
    x_t, out_t = outputs[first_reuse]
    assert torch.allclose(out_t, x_t + (v_i - x_i), atol=1e-6)


def test_caching_works_on_an_instance_level_forward_where_a_class_patch_is_shadowed():
    from wan.distributed.xdit_context_parallel import usp_dit_forward
    pipe = HOST.make()
    # what the pipelines do under sequence parallel: bind their own forward on the instance
    pipe.model.forward = types.MethodType(usp_dit_forward, pipe.model)

    # the official scripts patch the class: that forward is never reached
    model_class = type(pipe.model)
    class_calls = []
    original = model_class.forward
    model_class.forward = lambda self, *a, **k: class_calls.append(1) or original(self, *a, **k)
    try:
        HOST.video(pipe, steps=4)
    finally:
        model_class.forward = original
    assert class_calls == []

    calls = HOST.count_dit_calls(pipe)
    cache = wan21.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    HOST.video(pipe)
    assert len(calls) == cache.report()["dit_calls_computed"] < 2 * STEPS


def test_state_lives_on_the_instance_not_the_class():
    a, b = HOST.make(), HOST.make()
    class_forward, class_generate = type(a.model).forward, type(a).generate
    wan21.enable_easycache(a, threshold=0.5, warmup_steps=3)
    assert type(a.model).forward is class_forward and type(a).generate is class_generate
    assert "forward" in a.model.__dict__ and "generate" in a.__dict__
    assert "forward" not in b.model.__dict__ and "generate" not in b.__dict__
    baseline = HOST.video(b)
    cache_b = wan21.enable_easycache(b, threshold=0.0, warmup_steps=0)
    assert torch.equal(HOST.video(b), baseline)
    assert cache_b.report()["dit_calls_computed"] == 2 * STEPS


@pytest.mark.parametrize("cls_name,config", [("WanI2V", "i2v-14B"), ("WanFLF2V", "flf2v-14B"), ("WanVace", "vace-1.3B")])
def test_other_pipelines_cache_too(cls_name, config):
    from PIL import Image
    pipe = HOST.make(cls_name, config)
    calls = HOST.count_dit_calls(pipe)
    cache = wan21.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    common = dict(frame_num=5, sampling_steps=STEPS, seed=0, offload_model=False)
    if cls_name == "WanI2V":
        pipe.generate("a", img, max_area=480 * 832, **common)
    elif cls_name == "WanFLF2V":
        pipe.generate("a", img, img, max_area=480 * 832, **common)
    else:
        v, m, r = pipe.prepare_source([None], [None], [None], 5, (832, 480), 0)
        pipe.generate("a", v, m, r, size=(832, 480), **common)
    assert len(calls) == cache.report()["dit_calls_computed"] < 2 * STEPS


def test_foreign_objects_are_refused():
    with pytest.raises(TypeError, match="not a Wan2.1 pipeline"):
        wan21.enable_easycache(types.SimpleNamespace(generate=lambda prompt: None))


# --- the peers' Wan-specific parts ----------------------------------------------------------------

@pytest.mark.parametrize("use_ret_steps", [False, True])
def test_teacache_forces_its_published_steps(use_ret_steps):
    pipe = HOST.make()
    runs = []
    pipe.model.blocks[0].register_forward_pre_hook(lambda module, args: runs.append(1))
    cache = wan21.enable_teacache(pipe, 0.5, IDENTITY, use_ret_steps=use_ret_steps)
    HOST.video(pipe)
    report = cache.report()
    assert len(runs) == report["dit_calls_computed"] < report["dit_calls_total"] == 2 * STEPS
    calls = report["calls"]
    assert all(calls[2 * s]["computed"] == calls[2 * s + 1]["computed"] for s in range(STEPS))
    forced = 5 if use_ret_steps else 1
    assert all(c["computed"] for c in calls[:2 * forced])
    if use_ret_steps:
        assert calls[-1].get("reason") != "last"
    else:
        assert calls[-1]["computed"] and calls[-1]["reason"] == "last"


def test_teacache_indicator_is_the_time_embedding():
    """Without ret steps the indicator is e = time_embedding(sinusoid(t)): recompute it independently."""
    pipe = HOST.make()
    seen_t = []
    pipe.model.register_forward_pre_hook(lambda module, args, kwargs: seen_t.append(kwargs["t"]), with_kwargs=True)
    cache = wan21.enable_teacache(pipe, 0.5, IDENTITY)
    HOST.video(pipe)
    from wan.modules.model import sinusoidal_embedding_1d
    with torch.no_grad():
        e = [pipe.model.time_embedding(sinusoidal_embedding_1d(pipe.model.freq_dim, t)) for t in seen_t[::2]]
    assert cache.report()["calls"][2]["eps"] == pytest.approx(relative_l1([e[1]], [e[0]]), rel=1e-5)
    cache.disable()
    assert not pipe.model.time_embedding._forward_hooks


def test_teacache_published_coefficients_are_chosen_from_task_and_size():
    pick = wan21.wan_teacache_coefficients
    assert pick("t2v-1.3B", "832*480", False) == WAN21_TEACACHE_COEFFICIENTS[("t2v-1.3B", False)]
    assert pick("t2i-14B", "1024*1024", True) == WAN21_TEACACHE_COEFFICIENTS[("t2v-14B", True)]
    assert pick("i2v-14B", "480*832", False) == WAN21_TEACACHE_COEFFICIENTS[("i2v-14B-480P", False)]
    assert pick("i2v-14B", "1280*720", True) == WAN21_TEACACHE_COEFFICIENTS[("i2v-14B-720P", True)]
    assert pick("flf2v-14B", "1280*720", False) is None


def test_deltacache_partial_steps_run_only_the_foreground_blocks_as_reported():
    pipe = HOST.make()
    runs = {0: 0, 1: 0}
    for i in (0, 1):
        pipe.model.blocks[i].register_forward_pre_hook(lambda module, args, i=i: runs.__setitem__(i, runs[i] + 1))
    cache = wan21.enable_deltacache(pipe, foreground=(1,), warmup_steps=3, interval=4)
    latents = HOST.video(pipe)
    report = cache.report()
    full_steps = [0, 1, 2, 4, 8]
    # block 1 (foreground) runs on every call; block 0 only on full steps, both branches
    assert runs == {0: 2 * len(full_steps), 1: 2 * STEPS}
    assert report["blocks_run"] == sum(runs.values()) and report["blocks_total"] == 2 * STEPS * 2
    assert [c["step"] for c in report["calls"] if c["computed"] and c["branch"] == "cond"] == full_steps
    assert report["cached_blocks"] == {"blocks": [0]} and torch.isfinite(latents).all()


def test_deltacache_with_every_block_in_the_foreground_reports_every_call_computed():
    pipe = HOST.make()
    cache = wan21.enable_deltacache(pipe, foreground=(0, 1), warmup_steps=3, interval=4)
    HOST.video(pipe)
    report = cache.report()
    assert report["dit_calls_computed"] == report["dit_calls_total"] == 2 * STEPS
    assert report["blocks_run"] == report["blocks_total"] == 2 * 2 * STEPS


def test_calibration_records_one_ratio_per_call():
    pipe = HOST.make()
    cache = wan21.calibrate_pipeline(pipe)
    HOST.video(pipe)
    recorder = cache.policies[None]
    assert len(recorder.ratios) == 2 * STEPS and recorder.ratios[:2] == [1.0, 1.0]
    assert cache.report()["dit_calls_computed"] == 2 * STEPS


def test_a_sequence_parallel_forward_bound_after_enabling_is_reported_not_silent(capsys):
    from wan.distributed.xdit_context_parallel import usp_dit_forward
    from easycache.runtime.session import NoCallSeen
    pipe = HOST.make()
    cache = wan21.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    pipe.model.forward = types.MethodType(usp_dit_forward, pipe.model)  # bound after the cache: it is bypassed
    HOST.video(pipe)
    assert "easycache: warning: the cache saw no DiT call during this video" in capsys.readouterr().err
    with pytest.raises(NoCallSeen, match="enable the cache after the pipeline is fully built"):
        cache.report()
