"""What is particular to the diffusers integration, beyond the contract (which runs WanPipeline for
Wan 2.1 and 2.2 and HunyuanVideoPipeline with true CFG through every policy): a hook in diffusers'
own registry, state reset at the start of a call too, Wan 2.2's two transformers apart, the
channel slice of image-to-video, pipelines without cache contexts, TI2V's per-token timesteps,
refusals, a custom loop, and decisions equal to the library policy's on the same inputs."""

import warnings

import pytest
import torch
from diffusers.hooks import HookRegistry

from easycache.adapters import diffusers as ecd
from easycache.policies.base import alone
from easycache.policies.easycache import EasyCachePolicy
from hosts import DiffusersHunyuan, DiffusersWan, DiffusersWan22

WAN, WAN22, HUNYUAN = DiffusersWan(), DiffusersWan22(), DiffusersHunyuan()
STEPS = WAN.steps


def record_calls(transformer):
    """(hidden_states, output) of every call reaching the transformer's own forward."""
    seen, inner = [], transformer.forward

    def recording(*args, **kwargs):
        out = inner(*args, **kwargs)
        seen.append((kwargs["hidden_states"].clone(), out[0].clone()))
        return out
    transformer.forward = recording
    return seen


def test_the_hook_sits_in_diffusers_registry_and_leaves_the_class_alone():
    pipe = WAN.make()
    cls_forward = type(pipe.transformer).forward
    cache = ecd.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer)
    assert isinstance(registry.get_hook("easycache"), ecd.EasyCacheHook) and registry.get_hook("easycache")._is_stateful
    assert type(pipe.transformer).forward is cls_forward and not pipe.transformer.is_cache_enabled
    cache.disable()
    assert registry.get_hook("easycache") is None


def test_a_call_that_raised_leaves_nothing_behind():
    fresh = WAN.make()
    fresh_cache = ecd.enable_easycache(fresh, threshold=0.5, warmup_steps=3)
    expected = WAN.video(fresh)
    pipe = WAN.make()
    cache = ecd.enable_easycache(pipe, threshold=0.5, warmup_steps=3)

    def stop(pipeline, step, t, kwargs):
        if step == 6:
            raise KeyboardInterrupt("stopped by the user")
        return {}
    with pytest.raises(KeyboardInterrupt):
        pipe(**WAN.embeds(0), height=32, width=32, num_frames=9, num_inference_steps=STEPS, guidance_scale=5.0,
             generator=torch.Generator().manual_seed(3), output_type="latent", callback_on_step_end=stop)
    # maybe_free_model_hooks never ran: the next call's step 0 starts a new video all the same
    assert torch.equal(WAN.video(pipe), expected)
    assert cache.report()["calls"] == fresh_cache.report()["calls"]


def test_wan22_transformers_keep_their_own_state():
    """The low-noise transformer, told to reuse whenever it can, computes its first steps (it has
    no delta of its own), and every reused output is x + the delta of the same transformer's last
    computed call: the high-noise one's never stands in."""
    pipe = WAN22.make()
    seen = {"high": record_calls(pipe.transformer), "low": record_calls(pipe.transformer_2)}
    cache = ecd.enable_cache(pipe, {"high": EasyCachePolicy(0.5, 3), "low": EasyCachePolicy(1e9, 0)})
    outputs = []
    for name, transformer in (("high", pipe.transformer), ("low", pipe.transformer_2)):
        wrapped = transformer.forward

        def outer(*args, wrapped=wrapped, **kwargs):
            out = wrapped(*args, **kwargs)
            outputs.append((kwargs["hidden_states"].clone(), out[0].clone()))
            return out
        transformer.forward = outer
    WAN22.video(pipe)
    rows = cache.report()["calls"]
    low = [i for i, r in enumerate(rows) if r["module"] == "low"]
    assert low and rows[low[0]]["step"] == cache.report()["modules"]["low"]["first_step"] > 0
    assert [rows[i]["reason"] for i in low[:4]] == ["no-statistic"] * 4
    assert not all(rows[i]["computed"] for i in low)
    for index, row in enumerate(rows):
        if row["computed"]:
            continue
        same = [i for i in range(index) if rows[i]["module"] == row["module"] and rows[i]["branch"] == row["branch"]
                and rows[i]["computed"]]
        source = sum(1 for i in range(same[-1]) if rows[i]["computed"] and rows[i]["module"] == row["module"])
        x_i, v_i = seen[row["module"]][source]
        x_t, out_t = outputs[index]
        assert torch.allclose(out_t, x_t + (v_i - x_i), atol=1e-6), index


def test_image_to_video_takes_delta_on_the_latent_channels():
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            intermediate_size=16, patch_size=1)).eval()
    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=WAN.vae(),
                                   transformer=WAN.transformer(in_channels=36, image_dim=4),
                                   scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), image_encoder=encoder,
                                   image_processor=CLIPImageProcessor(crop_size=32, size=32))
    seen = record_calls(pipe.transformer)
    cache = ecd.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    outputs = []
    wrapped = pipe.transformer.forward
    pipe.transformer.forward = lambda *a, **k: outputs.append((k["hidden_states"].clone(), wrapped(*a, **k)[0])) or \
        (outputs[-1][1],)
    pipe(image=Image.new("RGB", (32, 32), (200, 40, 40)), **WAN.embeds(0), height=32, width=32, num_frames=9,
         num_inference_steps=STEPS, guidance_scale=5.0, generator=torch.Generator().manual_seed(0), output_type="latent")
    rows = cache.report()["calls"]
    assert seen[0][0].shape[1] == 36 and seen[0][1].shape[1] == 16  # mask + image latent in, 16 channels out
    reused = next(i for i, r in enumerate(rows) if not r["computed"])
    source = max(i for i in range(reused) if rows[i]["computed"] and rows[i]["branch"] == rows[reused]["branch"])
    x_i, v_i = seen[sum(r["computed"] for r in rows[:source])]
    x_t, out_t = outputs[reused]
    assert out_t.shape[1] == 16 and torch.allclose(out_t, x_t[:, :16] + (v_i - x_i[:, :16]), atol=1e-6)
    assert len(seen) == cache.report()["dit_calls_computed"] < 2 * STEPS


def test_ti2v_per_token_timesteps():
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=WAN.transformer(), vae=WAN.vae(),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), expand_timesteps=True)
    shapes = []
    pipe.transformer.register_forward_pre_hook(lambda m, a, k: shapes.append(k["timestep"].ndim), with_kwargs=True)
    baseline = WAN.video(WanPipeline(tokenizer=None, text_encoder=None, transformer=WAN.transformer(), vae=WAN.vae(),
                                     scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), expand_timesteps=True))
    cache = ecd.enable_easycache(pipe, threshold=0.0, warmup_steps=0)
    assert torch.equal(WAN.video(pipe), baseline) and set(shapes) == {2}  # [batch, tokens]
    cache.disable()
    cache = ecd.enable_easycache(pipe)  # TI2V's official settings: tau 0.05, R 7
    WAN.video(pipe)
    assert (cache.report()["threshold"], cache.report()["warmup_steps"]) == (0.05, 7)


def test_hunyuan_without_true_cfg_decides_on_its_one_call_per_step():
    pipe = HUNYUAN.make()
    calls = HUNYUAN.count_dit_calls(pipe)
    cache = ecd.enable_easycache(pipe, threshold=0.3, warmup_steps=3)
    HUNYUAN.video(pipe, true_cfg=False)
    report = cache.report()
    assert [r["branch"] for r in report["calls"]] == ["cond"] * STEPS and report["threshold"] == 0.3
    assert len(calls) == report["dit_calls_computed"] < STEPS
    assert (ecd.pipeline_defaults(pipe)["threshold"], ecd.pipeline_defaults(pipe)["warmup_steps"]) == (0.025, 5)


def test_a_pipeline_without_cache_contexts_runs_uncached_with_one_warning(capsys):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVideoToVideoPipeline
    from PIL import Image

    def make():
        return WanVideoToVideoPipeline(tokenizer=None, text_encoder=None, transformer=WAN.transformer(),
                                       vae=WAN.vae(), scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))

    def run(pipe):
        video = [Image.new("RGB", (32, 32), (20 * i, 100, 50)) for i in range(9)]
        return pipe(video=video, **WAN.embeds(0), height=32, width=32, num_inference_steps=STEPS, strength=0.8,
                    guidance_scale=5.0, generator=torch.Generator().manual_seed(0), output_type="latent").frames
    baseline = run(make())
    pipe = make()
    calls = WAN.count_dit_calls(pipe)
    cache = ecd.enable_easycache(pipe, threshold=0.5, warmup_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.equal(run(pipe), baseline)  # every call ran, nothing was reused
    assert sum("without a cache_context" in str(w.message) for w in caught) == 1
    assert "easycache: warning: the cache saw no DiT call during this video" in capsys.readouterr().err
    with pytest.raises(ecd.NoCallSeen, match="without a cache_context"):
        cache.report()
    assert len(calls) > 0 and cache.report(allow_warnings=True)["dit_calls_total"] == 0


def test_refusals_are_one_clear_line():
    from diffusers import FirstBlockCacheConfig
    pipe = WAN.make()
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    with pytest.raises(RuntimeError, match=r"another cache \(FirstBlockCacheConfig\) is enabled on this transformer"):
        ecd.enable_easycache(pipe)
    pipe.transformer.disable_cache()
    ecd.enable_easycache(pipe)
    with pytest.raises(RuntimeError, match="EasyCache is already enabled on this transformer"):
        ecd.apply_easycache(pipe.transformer)
    with pytest.raises(ValueError, match="unknown cache policy 'nope'"):
        ecd.enable_cache(WAN.make(), "nope")


def test_apply_and_remove_in_a_custom_loop():
    transformer = WAN.transformer()
    cache = ecd.apply_easycache(transformer, ecd.EasyCacheConfig(threshold=0.5, warmup_steps=2, num_inference_steps=8))
    x = torch.randn(1, 16, 3, 4, 4)
    context = torch.randn(1, 8, 32)
    outs = []
    for step in range(8):
        t = torch.tensor([1000.0 - 100 * step])
        with transformer.cache_context("cond", step_index=step):
            out = transformer(hidden_states=x, timestep=t, encoder_hidden_states=context).sample
        outs.append(out)
        x = x + 0.05 * out
    report = cache.report(allow_warnings=True)
    assert report["dit_calls_total"] == 8 and report["dit_calls_computed"] < 8 and report["calls"][-1]["reason"] == "last"
    ecd.remove_easycache(transformer)
    assert "forward" not in transformer.__dict__
    with pytest.raises(RuntimeError, match="not applied"):
        ecd.remove_easycache(transformer)


def test_decisions_are_the_library_policys_on_the_same_inputs():
    """One source of truth: driving EasyCachePolicy by hand with the inputs and outputs the
    transformer saw gives the decisions the hook took."""
    pipe = WAN.make()
    seen = record_calls(pipe.transformer)
    inputs = []  # every call's input, reused ones too: nn.Module's pre-hooks run before diffusers' hooks
    pipe.transformer.register_forward_pre_hook(lambda m, a, k: inputs.append(k["hidden_states"].clone()),
                                               with_kwargs=True)
    cache = ecd.enable_easycache(pipe, threshold=0.4, warmup_steps=3)
    WAN.video(pipe)
    rows = cache.report()["calls"]
    policy = EasyCachePolicy(0.4, 3)
    policy.start_video(STEPS)
    computed, outputs = [], iter(seen)
    for step in range(STEPS):
        x = [inputs[2 * step]]
        decision = policy.decide(step, 0, x, alone)
        for branch in (0, 1):
            if decision.compute:
                xin, v = next(outputs)
                policy.record_computed((branch, 0), [xin], [v])
            computed.append(decision.compute)
    assert computed == [r["computed"] for r in rows] and not all(computed)
