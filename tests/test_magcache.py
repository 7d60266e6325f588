"""MagCache (peer method) and the calibration run: rules by hand, then through the Wan2.1 script."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, WAN_STANDIN, end_worker
from easycache.magcache import MagCachePolicy, MagnitudeRecorder, merge_calibration, nearest_resample


def marks(policy, steps, branches=1):
    policy.start_video(steps)
    out = []
    for step in range(steps):
        for branch in range(branches):
            d = policy.decide(step, None, branch=branch)
            if d.compute:
                policy.record_computed((branch, 0), [torch.zeros(2)], [torch.ones(2)])
            out.append("C" if d.compute else "R")
    return "".join(out)


def test_hand_worked_accumulated_magnitude_error():
    # step 1: ratio .9, err .1 (R); step 2: .81, err .19 -> .29 (R); step 3: .729, +.271 = .56 (C, reset);
    # step 4: .5, err .5 >= .3 (C); step 5: 1.0, err 0 (R). Step 0: first 20% of 6 calls (int 1.2 = 1).
    policy = MagCachePolicy([1.0, 0.9, 0.9, 0.9, 0.5, 1.0], threshold=0.3, max_skips=2, branches=1)
    assert marks(policy, 6) == "CRRCCR"
    assert policy.decisions[2].eps == pytest.approx(0.19) and policy.decisions[2].accumulated == pytest.approx(0.29)


def test_at_most_k_consecutive_skips():
    policy = MagCachePolicy([1.0] * 6, threshold=0.3, max_skips=2, branches=1)
    assert marks(policy, 6) == "CRRCRR"


def test_branches_decide_independently():
    # interleaved ratios: branch 0 stays at 1.0, branch 1 drops to 0.5
    ratios = [1.0, 1.0, 1.0, 0.5, 1.0, 0.5, 1.0, 1.0]
    policy = MagCachePolicy(ratios, threshold=0.3, max_skips=5, retention_ratio=0.25, branches=2)
    # calls 0, 1 (first 25% of 8) forced; step 1: cond err 0 (R), uncond err .5 (C); step 2: R, C; step 3: R, R
    assert marks(policy, 4, branches=2) == "CC" + "RC" + "RC" + "RR"


def test_ratios_are_resampled_to_another_step_count():
    assert nearest_resample([1, 2, 3, 4, 5], 3) == [1, 3, 5]
    # positions 0, .5, 1, 1.5, 2 round half to even, as numpy.round does in the official code
    assert nearest_resample([1, 2, 3], 5) == [1, 1, 2, 3, 3]
    policy = MagCachePolicy([1.0, 1.0, 0.9, 0.8, 0.7, 0.6], branches=2)
    policy.start_video(5)
    assert [r[0] for r in policy.step_ratios] == [1.0, 1.0, 0.9, 0.7, 0.7]  # branch 0: 1.0, 0.9, 0.7


def test_recorder_measures_residual_norm_ratios_per_branch():
    rec = MagnitudeRecorder(branches=2)
    rec.start_video(2)
    for step, scale in enumerate((1.0, 2.0)):
        for branch in (0, 1):
            rec.decide(step, [torch.tensor([1.0 + step])], branch=branch)
            before = torch.zeros(1, 2, 2)
            after = torch.tensor([[[3.0, 4.0], [0.0, 5.0]]]) * scale * (1 + branch)
            rec.record_computed((branch, 0), [before], [after])
    assert rec.ratios == [1.0, 1.0, 2.0, 2.0]  # token norms 5, 5 -> 10, 10 on both branches
    assert rec.indicator_changes == [pytest.approx(1.0)] and rec.output_changes == [pytest.approx(1.0)]


def test_merge_averages_ratios_and_refits_the_polynomial():
    rec = MagnitudeRecorder(branches=1)
    rec.ratios, rec.indicator_changes, rec.output_changes = [1.0, 0.8], [0.1, 0.2, 0.3], [0.2, 0.4, 0.6]
    first = merge_calibration(None, rec, use_ret_steps=False)
    assert first["teacache_coefficients"] is None  # a degree-4 fit needs 5 points
    rec.ratios, rec.indicator_changes, rec.output_changes = [1.0, 0.6], [0.4, 0.5], [0.8, 1.0]
    second = merge_calibration(first, rec, use_ret_steps=False)
    assert second["videos"] == 2 and second["magcache_ratios"] == pytest.approx([1.0, 0.7])
    fit = np.poly1d(second["teacache_coefficients"])
    assert fit(0.25) == pytest.approx(0.5, abs=1e-6)  # the points lie on y = 2x
    with pytest.raises(ValueError):
        merge_calibration(second, rec, use_ret_steps=True)


def run_cli(args, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, os.path.join(ROOT, "wan2_1", "easycache_generate.py"), "--ckpt_dir",
                           str(ckpt), "--size", "832*480", "--frame_num", "5", "--sample_steps", "12",
                           "--task", "t2v-1.3B", *args], cwd=WAN_STANDIN, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_calibrate_then_run_magcache_and_teacache_with_the_constants(tmp_path):
    calibration = tmp_path / "cal.json"
    for seed in (0, 1, 2):
        result = run_cli(["--base_seed", str(seed), "--calibrate", str(calibration),
                          "--save_file", str(tmp_path / f"cal{seed}.mp4")], tmp_path)
        assert result.returncode == 0, result.stderr
    cal = json.loads(calibration.read_text())
    assert cal["videos"] == 3 and len(cal["magcache_ratios"]) == 24 and cal["magcache_ratios"][:2] == [1.0, 1.0]
    assert len(cal["teacache_coefficients"]) == 5 and len(cal["teacache_points"]["x"]) == 3 * 11
    calibration_report = json.loads((tmp_path / "cal0.report.json").read_text())
    assert calibration_report["dit_calls_computed"] == 24  # calibration caches nothing

    result = run_cli(["--base_seed", "0", "--cache", "magcache", "--magcache_ratios", str(calibration),
                      "--magcache_thresh", "0.3", "--save_file", str(tmp_path / "mag.mp4")], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "mag.report.json").read_text())
    assert report["cache"] == "magcache" and report["blocks_run"] < report["blocks_total"]
    assert all(c["computed"] for c in report["calls"][:4])  # the first 20% of 24 calls

    result = run_cli(["--base_seed", "0", "--cache", "teacache", "--teacache_coefficients", str(calibration),
                      "--save_file", str(tmp_path / "tea.mp4")], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "tea.report.json").read_text())["coefficients"] == cal["teacache_coefficients"]

    result = run_cli(["--sample_steps", "10", "--calibrate", str(calibration)], tmp_path)
    assert result.returncode == 2 and "was calibrated for another step count" in result.stderr


def test_magcache_without_ratios_is_one_line(tmp_path):
    result = run_cli(["--cache", "magcache"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("easycache_generate.py: error: --cache magcache needs --magcache_ratios "
                                     "FILE: record one with --calibrate FILE")


def _ranks_worker(rank, tmp):
    import torch.distributed as dist
    from conftest import load_script
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2)
    sys.path.insert(0, WAN_STANDIN)
    import wan
    script = load_script("wan2_1/easycache_generate.py", "easycache_generate")
    pipe = wan.WanT2V(config=wan.configs.WAN_CONFIGS["t2v-1.3B"], checkpoint_dir=tmp, rank=rank,
                      dit_fsdp=True, use_usp=True)
    ratios = [1.0, 1.0] + [0.98, 0.9] * 11
    cache = script.enable_magcache(pipe, ratios, threshold=0.15)
    pipe.generate("a red ball", size=(832, 480), frame_num=5, sampling_steps=12, seed=0, offload_model=False)
    report = cache.report()
    with open(f"{tmp}/mag{rank}.json", "w") as f:
        json.dump({"calls": [c["computed"] for c in report["calls"]], "blocks_run": report["blocks_run"],
                   "agree": report["ranks_agree"], "latents": pipe.latents[0].flatten()[:32].tolist()}, f)
    end_worker()


def test_two_ranks_with_fsdp_and_sequence_parallel_agree(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_ranks_worker, args=(str(tmp_path),), nprocs=2)
    results = [json.loads((tmp_path / f"mag{r}.json").read_text()) for r in range(2)]
    assert results[0] == results[1] and results[0]["agree"] is True
    calls = results[0]["calls"]
    # cond (ratio .98) skips where uncond (ratio .9) cannot: the branches decide independently
    assert calls[0::2] != calls[1::2] and results[0]["blocks_run"] == 2 * sum(calls)
