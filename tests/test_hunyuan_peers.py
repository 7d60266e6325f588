"""The peer methods (TeaCache, MagCache, delta cache) and the calibration run for HunyuanVideo, on the
stand-in checkout: schedules by hand, bitwise baselines, counts against the report, replay of the
image-token residual across both block stacks, and the command line."""

import json

import pytest
import torch

from easycache.deltacache import (HUNYUAN_DOUBLE_CACHED, HUNYUAN_SINGLE_CACHED, HUNYUAN_SINGLE_REFRESH_STEPS,
                                  DeltaCachePolicy, RefreshSchedule)
from easycache.teacache import relative_l1
from test_hunyuan_adapter import STEPS, hy_script, hy_standin, make_sampler, predict  # noqa: F401 (fixtures)
from test_hunyuan_cli import sample_video  # noqa: F401 (fixture)

IDENTITY = [1.0, 0.0]  # TeaCache polynomial: the raw relative L1 (the published one saturates on a tiny DiT)


def count_blocks(sampler):
    runs = []
    for blocks in (sampler.pipeline.transformer.double_blocks, sampler.pipeline.transformer.single_blocks):
        for block in blocks._modules.values():
            block.register_forward_pre_hook(lambda *_: runs.append(1))
    return runs


# --- hand-worked schedules and statistics ---------------------------------------------------

def test_published_delta_profile_by_hand(hy_script):
    policy = DeltaCachePolicy(6, 6, groups={"single": RefreshSchedule(6, refresh_steps=HUNYUAN_SINGLE_REFRESH_STEPS)})
    policy.start_video(50)
    decisions = [policy.decide(step) for step in range(50)]
    double = [d.step for d in decisions if d.compute]
    single = [d.step for d in decisions if d.groups["single"]]
    assert double == [0, 1, 2, 3, 4, 5, 6, 12, 18, 24, 30, 36, 42, 48]
    assert single == [0, 1, 2, 3, 4, 5, 6, 18, 26, 32, 38, 42, 46, 48]
    # double: 6 blocks always run, 14 replayed as one delta; single: 16 always run, 24 in 8 deltas
    double_segments = hy_script._stack_segments(20, HUNYUAN_DOUBLE_CACHED, 0, True)
    single_segments = hy_script._stack_segments(40, HUNYUAN_SINGLE_CACHED, 20, "single")
    assert [s for s in double_segments if s[2]] == [(6, 20, True)]
    assert len([s for s in single_segments if s[2]]) == 8
    assert sum(e - s for s, e, c in single_segments if c) == 24
    blocks_run = sum((20 if d.compute else 6) + (40 if d.groups["single"] else 16) for d in decisions)
    assert blocks_run == 6 * 60 + (8 * 20 + 36 * 6) + (8 * 40 + 36 * 16) == 1632  # 3000 / 1632 = 1.84x


def test_refresh_schedule_without_warmup_computes_until_it_has_deltas():
    policy = DeltaCachePolicy(0, 4, groups={"late": RefreshSchedule(0, refresh_steps=[3])})
    policy.start_video(6)
    decisions = [policy.decide(step) for step in range(6)]
    assert [d.compute for d in decisions] == [True, False, False, False, True, False]
    assert [d.groups["late"] for d in decisions] == [True, False, False, True, False, False]
    assert [d.reason for d in decisions][:2] == ["schedule", "reuse"]
    assert DeltaCachePolicy(6, 6).settings == {"warmup_steps": 6, "interval": 6}  # Wan's report unchanged


def test_relative_l1_summed_over_shards_is_the_whole():
    a, b = torch.tensor([[1.0, -2.0], [3.0, 0.5]]), torch.tensor([[1.5, -2.0], [2.0, 1.0]])
    whole = relative_l1([a], [b])
    assert whole == pytest.approx((0.5 + 0 + 1 + 0.5) / (1.5 + 2 + 2 + 1))
    shards = [torch.stack([(x.float() - y).abs().sum(), y.abs().sum()]) for x, y in zip(a, b)]
    assert relative_l1([a[:1]], [b[:1]], reduce=lambda mine: shards[0] + shards[1]) == pytest.approx(whole)


# --- on the stand-in --------------------------------------------------------------------------

@pytest.mark.parametrize("cfg_scale", [1.0, 5.0])
def test_methods_computing_every_step_are_bitwise_the_baseline(make_sampler, hy_script, cfg_scale):
    baseline = predict(make_sampler(), cfg_scale)
    enables = [lambda s: hy_script.enable_teacache(s, 0.0, IDENTITY),
               lambda s: hy_script.enable_magcache(s, [1.5] * STEPS, threshold=0.0),
               lambda s: hy_script.enable_deltacache(s, [1], [0, 2], warmup_steps=STEPS),
               hy_script.calibrate_sampler]
    for enable in enables:
        sampler = make_sampler()
        runs = count_blocks(sampler)
        cache = enable(sampler)
        assert torch.equal(predict(sampler, cfg_scale), baseline), cache.method
        report = cache.report()
        assert report["dit_calls_computed"] == STEPS and report["blocks_run"] == len(runs) == 5 * STEPS


def test_teacache_reuses_the_residual_of_both_stacks(make_sampler, hy_script):
    sampler = make_sampler()
    model = sampler.pipeline.transformer
    seen = {"indicator": [], "embedded": [], "head_in": []}
    model.double_blocks[0].img_attn_qkv.register_forward_pre_hook(lambda m, a: seen["indicator"].append(a[0]))
    model.img_in.register_forward_hook(lambda m, a, out: seen["embedded"].append(out))
    model.final_norm.register_forward_pre_hook(lambda m, a: seen["head_in"].append(a[0]))
    runs = count_blocks(sampler)
    cache = hy_script.enable_teacache(sampler, 0.3, IDENTITY)
    predict(sampler)
    report = cache.report()
    computed = [c["computed"] for c in report["calls"]]
    assert computed[0] and computed[-1] and 3 <= sum(computed) < STEPS
    assert report["blocks_run"] == len(runs) == 5 * sum(computed) and report["blocks_total"] == 5 * STEPS
    policy = cache.forward.policy
    # the indicator is the first double block's modulated image input, as that block computes it
    assert torch.allclose(policy.prev_indicator[0], seen["indicator"][-1], atol=1e-6)
    # a reused step feeds the head image tokens + the residual of the last computed step
    last_reused = max(i for i, c in enumerate(computed) if not c)
    last_computed = max(i for i in range(last_reused) if computed[i])
    residual = seen["head_in"][last_computed] - seen["embedded"][last_computed]
    assert torch.allclose(seen["head_in"][last_reused], seen["embedded"][last_reused] + residual, atol=1e-5)


def test_teacache_eps_by_hand(make_sampler, hy_script):
    sampler = make_sampler()
    indicators = []
    sampler.pipeline.transformer.double_blocks[0].img_attn_qkv.register_forward_pre_hook(
        lambda m, a: indicators.append(a[0].clone()))
    cache = hy_script.enable_teacache(sampler, 0.0, [2.0, 0.1])  # every step computed: indicators seen
    predict(sampler, steps=4)
    calls = cache.report()["calls"]
    assert [c["eps"] for c in calls[1:3]] == pytest.approx(
        [2 * relative_l1([indicators[i]], [indicators[i - 1]]) + 0.1 for i in (1, 2)], rel=1e-5)


def test_magcache_skips_by_the_calibrated_ratios(make_sampler, hy_script):
    sampler = make_sampler()
    runs = count_blocks(sampler)
    # retention 0.25 of 12 steps: 0-2 computed; then errors 0.05, 0.1 (sum 0.15 >= 0.12 -> compute) ...
    cache = hy_script.enable_magcache(sampler, [1.0] * 3 + [0.95] * 9, threshold=0.12, max_skips=6,
                                      retention_ratio=0.25)
    predict(sampler)
    report = cache.report()
    computed = [c["computed"] for c in report["calls"]]
    # step 3: |1-0.95| = 0.05 reuse; step 4: 0.05 + |1-0.9025| = 0.1475 -> compute; repeating
    assert computed == [True, True, True, False, True, False, True, False, True, False, True, False]
    assert report["blocks_run"] == len(runs) == 5 * sum(computed)
    assert report["max_skips"] == 6 and report["calibrated_steps"] == STEPS


def test_deltacache_runs_the_scheduled_blocks_as_reported(make_sampler, hy_script):
    sampler = make_sampler()
    runs = count_blocks(sampler)
    cache = hy_script.enable_deltacache(sampler, [1], [0, 2], warmup_steps=3, interval=3, single_refresh_steps=[5, 9])
    latents = predict(sampler)
    report = cache.report()
    # blocks 0 (double) and 3 (single 1) always; double 1 on 0-2, 3, 6, 9; singles 0, 2 on 0-2, 5, 9
    assert report["blocks_run"] == len(runs) == 2 * STEPS + 6 + 2 * 5 == 40
    assert [c["step"] for c in report["calls"] if c["computed"]] == [0, 1, 2, 9]
    assert [c["groups"]["single"] for c in report["calls"]][3:7] == [False, False, True, False]
    assert report["double_cached_blocks"] == [1] and report["single_cached_blocks"] == [0, 2]
    assert report["groups"] == {"single": {"warmup_steps": 3, "refresh_steps": [5, 9]}}
    assert torch.isfinite(latents).all()
    with pytest.raises(ValueError, match="out of range"):
        hy_script.enable_deltacache(make_sampler(), HUNYUAN_DOUBLE_CACHED, HUNYUAN_SINGLE_CACHED)


def test_state_is_reset_per_video_and_disable_restores(make_sampler, hy_script):
    baseline = predict(make_sampler())
    for enable in (lambda s: hy_script.enable_teacache(s, 0.3, IDENTITY),
                   lambda s: hy_script.enable_magcache(s, [0.95] * STEPS, 0.12, 6, 0.25),
                   lambda s: hy_script.enable_deltacache(s, [1], [0, 2], 3, 3, [5, 9])):
        sampler = make_sampler()
        cache = enable(sampler)
        first = predict(sampler)
        decisions = [c["computed"] for c in cache.report()["calls"]]
        predict(sampler, seed=3, steps=6)
        assert torch.equal(predict(sampler), first)
        assert [c["computed"] for c in cache.report()["calls"]] == decisions
        cache.disable()
        model = sampler.pipeline.transformer
        assert type(model.double_blocks) is torch.nn.ModuleList and "forward" not in model.__dict__
        assert torch.equal(predict(sampler), baseline)


def test_calibration_feeds_magcache_and_teacache(make_sampler, hy_script):
    sampler = make_sampler()
    cache = hy_script.calibrate_sampler(sampler)
    predict(sampler)
    calibration = hy_script.merge_calibration(None, cache.forward.policy, use_ret_steps=False)
    ratios = calibration["magcache_ratios"]
    assert len(ratios) == STEPS and ratios[0] == 1.0 and all(r > 0 for r in ratios)
    assert len(calibration["teacache_coefficients"]) == 5 and len(calibration["teacache_points"]["x"]) == STEPS - 1
    cache.disable()
    magcache = hy_script.enable_magcache(sampler, ratios, threshold=0.5, max_skips=2)
    predict(sampler)
    assert magcache.report()["dit_calls_computed"] < STEPS


# --- command line -----------------------------------------------------------------------------

@pytest.fixture
def weights(tmp_path):
    (tmp_path / "dit.pt").write_bytes(b"stand-in")
    return ["--model-base", str(tmp_path), "--dit-weight", str(tmp_path / "dit.pt"), "--prompt", "a cat",
            "--video-size", "64", "64", "--video-length", "5", "--infer-steps", str(STEPS), "--seed", "0",
            "--flow-reverse"]


def parse(hy_script, sample_video, argv, capsys):
    try:
        return hy_script.parse_args(sample_video, argv), []
    except SystemExit as exit_:
        assert exit_.code == 2
        return None, capsys.readouterr().err.strip().splitlines()


def test_peer_flags_and_published_defaults(sample_video, hy_script, weights, capsys):
    args, _ = parse(hy_script, sample_video, [*weights, "--cache", "teacache"], capsys)
    assert args.teacache_thresh == 0.1 and args.teacache_coefficients == list(hy_script.HUNYUAN_TEACACHE_COEFFICIENTS)
    args, _ = parse(hy_script, sample_video, [*weights, "--cache", "deltacache"], capsys)
    assert (args.delta_double_cached, args.delta_single_cached) == (list(range(6, 20)), list(HUNYUAN_SINGLE_CACHED))
    assert args.delta_single_steps == list(HUNYUAN_SINGLE_REFRESH_STEPS) and args.delta_warmup == args.delta_interval == 6
    args, _ = parse(hy_script, sample_video, [*weights, "--cache", "teacache", "--teacache_coefficients", "1,0"], capsys)
    assert args.teacache_coefficients == [1.0, 0.0]
    defaults = hy_script.parse_args(sample_video, weights)
    assert (defaults.magcache_thresh, defaults.magcache_K, defaults.retention_ratio) == (0.24, 6, 0.2)


@pytest.mark.parametrize("extra,expected", [
    (["--cache", "teacache", "--teacache-thresh", "-1"], "--teacache-thresh must be a number >= 0"),
    (["--cache", "teacache", "--teacache-coefficients", "1,x"], "--teacache-coefficients must be comma-separated"),
    (["--cache", "magcache"], "--cache magcache needs --magcache-ratios FILE"),
    (["--cache", "magcache", "--magcache-ratios", "/nonexistent.json"], "cannot read it as JSON"),
    (["--cache", "deltacache", "--delta-interval", "0"], "--delta-interval >= 1"),
    (["--cache", "deltacache", "--delta-double-cached", "6-x"], "--delta-double-cached must be comma-separated"),
    (["--cache", "deltacache", "--delta-single-cached", "30-45"], "has 40 single-stream blocks"),
    (["--cache", "teacache", "--calibrate", "cal.json"], "--calibrate runs without a cache"),
])
def test_peer_errors_are_one_line(sample_video, hy_script, weights, capsys, extra, expected):
    args, err = parse(hy_script, sample_video, [*weights, *extra], capsys)
    assert args is None and len(err) == 1 and expected in err[0], err


def test_cli_calibrate_then_each_method(sample_video, hy_script, weights, tmp_path, capsys):
    """run(): the stand-in's sample_video.main() with each --cache; the report matches the run."""
    calibration = str(tmp_path / "cal.json")
    runs = [["--calibrate", calibration], ["--calibrate", calibration],
            ["--cache", "magcache", "--magcache-ratios", calibration, "--magcache-thresh", "0.5"],
            ["--cache", "teacache", "--teacache-coefficients", calibration],
            ["--cache", "deltacache", "--delta-double-cached", "1", "--delta-single-cached", "0,2",
             "--delta-warmup", "3", "--delta-interval", "3", "--delta-single-steps", "5,9"]]
    for i, extra in enumerate(runs):
        out = tmp_path / f"run{i}"
        args = hy_script.parse_args(sample_video, [*weights, "--save-path", str(out), *extra])
        report = hy_script.run(sample_video, args)
        saved = json.loads(next(out.glob("*.report.json")).read_text())
        assert saved["blocks_run"] == report["blocks_run"] and saved["cache"] == args.cache
        assert saved["dit_calls_total"] == STEPS
    assert json.loads(open(calibration).read())["videos"] == 2
    printed = capsys.readouterr().out
    assert "Calibration run (no cache)" in printed and "MagCache (thresh 0.5, K 6" in printed
    assert "Delta cache (full steps: first 3, double blocks every 3, single blocks on 5,9)" in printed
    assert "transformer blocks run: 40/60" in printed
