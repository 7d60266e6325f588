"""What is particular to Wan2.2 (the stand-in checkout), beyond the contract every host keeps: the
A14B pipelines' two experts, each with its own cache that serves only its own steps, the split
read from the checkout's own schedulers, nothing carried across the switch, per-expert settings;
TI2V-5B's per-token timestep; image-to-video's conditioning."""

import tempfile

import pytest
import torch

from easycache.adapters import wan22
from easycache.policies.easycache import EasyCachePolicy
from hosts import Wan22, Wan22TI2V

HOST, TI2V = Wan22(), Wan22TI2V()
STEPS = HOST.steps


def high_low(report):
    return {name: (m["dit_calls_computed"], m["dit_calls_total"]) for name, m in report["modules"].items()}


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
@pytest.mark.parametrize("task,shift,splits", [
    ("t2v-A14B", 12.0, {10: (7, 3), 20: (13, 7), 40: (26, 14), 50: (32, 18)}),
    ("i2v-A14B", 5.0, {10: (4, 6), 20: (8, 12), 40: (15, 25), 50: (18, 32)}),
])
def test_the_expert_split_is_the_checkouts_own(task, shift, splits, solver):
    gen = HOST.generate
    config = gen.WAN_CONFIGS[task]
    pipeline = gen.wan.WanT2V if task == "t2v-A14B" else gen.wan.WanI2V
    for steps, (high, low) in splits.items():
        split = wan22.expert_steps(wan22.solvers_of(pipeline), config.boundary, config.num_train_timesteps, steps,
                                   shift, solver)
        assert split == {"high": high, "low": low}


def test_each_expert_serves_its_own_steps_and_its_report_counts_them():
    pipe = HOST.make()
    calls = HOST.count_dit_calls(pipe)
    cache = wan22.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    HOST.video(pipe)
    report = cache.report()
    split = wan22.expert_steps(wan22.solvers_of(type(pipe)), pipe.boundary, 1000, STEPS, 12.0, "unipc")
    rows = report["calls"]
    # the high-noise expert's steps first, then the low-noise one's, both branches each
    assert [r["module"] for r in rows] == ["high"] * 2 * split["high"] + ["low"] * 2 * split["low"]
    assert [r["step"] for r in rows[::2]] == list(range(STEPS))
    assert calls == [r["module"] for r in rows if r["computed"]]  # what reached each expert
    assert high_low(report) == {"high": (calls.count("high"), 2 * split["high"]),
                                "low": (calls.count("low"), 2 * split["low"])}
    assert report["modules"]["low"]["first_step"] == split["high"] and report["settings"]["low"]["warmup_steps"] == 2
    # warm-ups are each expert's own, and each expert's last step is computed
    high = [r for r in rows if r["module"] == "high"]
    low = [r for r in rows if r["module"] == "low"]
    assert all(r["computed"] for r in high[:6] + high[-2:] + low[:4] + low[-2:])
    assert high[-1]["reason"] == "last" and low[-1]["reason"] == "last" and low[0]["reason"] == "warmup"
    assert sum(r["computed"] for r in rows) < 2 * STEPS


def test_nothing_crosses_the_switch():
    """The low-noise expert, told to reuse whenever it can, still computes its first steps: it has
    no delta of its own yet, and the high-noise expert's must never stand in for its output.
    Every reused output is x + the delta of that expert's own last computed call."""
    pipe = HOST.make()
    seen = {}
    for name, module in HOST.dits(pipe).items():
        inner = module.forward

        def recording(x, inner=inner, name=name, **kwargs):
            out = inner(x, **kwargs)
            seen.setdefault(name, []).append((x[0].clone(), out[0].clone()))
            return out
        module.forward = recording
    cache = wan22.enable_cache(pipe, {"high": EasyCachePolicy(0.5, 3), "low": EasyCachePolicy(1e9, 0)})
    outputs = []
    for name, module in HOST.dits(pipe).items():
        wrapped = module.forward

        def outer(x, wrapped=wrapped, **kwargs):
            out = wrapped(x, **kwargs)
            outputs.append((x[0].clone(), out[0].clone()))
            return out
        module.forward = outer
    HOST.video(pipe)
    rows = cache.report()["calls"]
    low = [i for i, r in enumerate(rows) if r["module"] == "low"]
    # first low step: no delta of its own; second: no rate of its own yet (k needs two computed steps)
    assert [rows[i]["reason"] for i in low[:4]] == ["no-statistic"] * 4 and all(rows[i]["computed"] for i in low[:4])
    assert not all(rows[i]["computed"] for i in low)  # and then it does reuse
    for index, row in enumerate(rows):
        if row["computed"]:
            continue
        same = [i for i in range(index) if rows[i]["module"] == row["module"] and rows[i]["branch"] == row["branch"]
                and rows[i]["computed"]]
        source = sum(1 for i in range(same[-1]) if rows[i]["computed"] and rows[i]["module"] == row["module"])
        x_i, v_i = seen[row["module"]][source]
        x_t, out_t = outputs[index]
        assert torch.allclose(out_t, x_t + (v_i - x_i), atol=1e-6), index


def test_per_expert_thresholds_and_warmups():
    pipe = HOST.make()
    cache = wan22.enable_easycache(pipe, threshold=0.5, warmup_steps=3, threshold_high=0.0, warmup_steps_low=1)
    HOST.video(pipe)
    report = cache.report()
    assert report["settings"] == {"high": {"threshold": 0.0, "warmup_steps": 3},
                                  "low": {"threshold": 0.5, "warmup_steps": 1}}
    computed, total = high_low(report)["high"]
    assert computed == total  # tau 0: every high-noise step computed
    assert high_low(report)["low"][0] < high_low(report)["low"][1]


def test_official_defaults_per_pipeline():
    assert wan22.enable_easycache(HOST.make()).report(allow_warnings=True)["settings"]["high"] == {
        "threshold": 0.06, "warmup_steps": 7}
    assert wan22.enable_easycache(TI2V.make()).report(allow_warnings=True)["threshold"] == 0.05


def test_ti2v_per_token_timesteps_pass_through_and_image_mode_caches():
    pipe = TI2V.make()
    seen_t = []
    pipe.model.register_forward_pre_hook(lambda m, a, kw: seen_t.append(kw["t"].shape), with_kwargs=True)
    calls = TI2V.count_dit_calls(pipe)
    cache = wan22.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    gen = TI2V.generate
    from PIL import Image
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    pipe.generate("a red ball", img=image, max_area=gen.MAX_AREA_CONFIGS["1280*704"], frame_num=5,
                  sampling_steps=STEPS, seed=0, offload_model=True)
    report = cache.report()
    assert all(len(shape) == 2 and shape[0] == 1 for shape in seen_t)  # [1, seq_len]
    assert len(calls) == report["dit_calls_computed"] < report["dit_calls_total"] == 2 * STEPS
    assert "modules" not in report and report["calls"][-1]["reason"] == "last"


def test_image_to_video_experts_cache_with_their_conditioning():
    gen = HOST.generate
    pipe, baseline_pipe = (gen.wan.WanI2V(config=gen.WAN_CONFIGS["i2v-A14B"], checkpoint_dir=tempfile.gettempdir())
                           for _ in range(2))
    calls = HOST.count_dit_calls(pipe)
    ys = []
    pipe.high_noise_model.register_forward_pre_hook(lambda m, a, kw: ys.append(kw["y"][0].shape[0]), with_kwargs=True)
    from PIL import Image
    image = Image.new("RGB", (64, 48), (30, 200, 30))
    common = dict(max_area=gen.MAX_AREA_CONFIGS["1280*720"], frame_num=5, sampling_steps=STEPS, seed=0)
    baseline_pipe.generate("a cat", image, **common)
    off = wan22.enable_easycache(pipe, threshold=0.0, warmup_steps=0, warmup_steps_low=0)
    pipe.generate("a cat", image, **common)
    assert torch.equal(pipe.latents[0], baseline_pipe.latents[0]) and off.report()["dit_calls_computed"] == 2 * STEPS
    off.disable()
    calls.clear()
    cache = wan22.enable_easycache(pipe, threshold=0.5, warmup_steps=2)
    pipe.generate("a cat", image, **common)
    report = cache.report()
    assert ys and set(ys) == {ys[0]}  # the mask + image latent reach the experts as y
    assert calls == [r["module"] for r in report["calls"] if r["computed"]]
    assert report["dit_calls_computed"] < 2 * STEPS and set(report["modules"]) == {"high", "low"}


def test_offloading_between_experts_keeps_the_caches():
    pipe = HOST.make()
    moves = []
    for name, module in HOST.dits(pipe).items():
        original = module.to
        module.to = lambda *a, original=original, name=name, **k: moves.append(name) or original(*a, **k)
    cache = wan22.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    HOST.video(pipe)  # offload_model=True: the pipeline moves the experts every step
    assert moves and cache.report()["dit_calls_total"] == 2 * STEPS
