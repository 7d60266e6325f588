"""wan2_2/easycache_generate.py as a user runs it, inside the stand-in Wan2.2 checkout: generate.py's
own flags and checks plus the generated cache flags and the per-expert ones, one-line errors before
any model loads (warm-ups checked against each expert's own steps), the video and its report per
expert, the calibration run per expert, and the peers."""

import json

import pytest

from helpers import WAN22_SCRIPT, WAN22_STANDIN, load_script
from helpers import run_script as run
from hosts import import_checkout

FAST = ["--size", "1280*720", "--frame_num", "5", "--sample_steps", "12", "--base_seed", "0"]


def run_script(args, cwd=WAN22_STANDIN):
    return run(WAN22_SCRIPT, args, cwd)


@pytest.fixture(scope="module")
def script():
    return load_script(WAN22_SCRIPT, "easycache_generate_wan22")


@pytest.fixture(scope="module")
def gen():
    return import_checkout(WAN22_STANDIN)


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    return str(path)


def parse(script, gen, argv, capsys):
    """parse_args in-process; returns (args or None, stderr lines)."""
    try:
        return script.parse_args(gen, argv), []
    except SystemExit as exit_:
        assert exit_.code == 2
        return None, capsys.readouterr().err.strip().splitlines()


def test_parser_is_generate_py_plus_the_cache_flags(script, gen, ckpt, monkeypatch):
    upstream = {a.dest: a.default for a in script.upstream_parser(gen)._actions if a.dest != "help"}
    args = script.parse_args(gen, ["--ckpt_dir", ckpt])
    for name, default in upstream.items():
        if name not in ("ckpt_dir", "sample_steps", "sample_shift", "frame_num", "base_seed", "prompt",
                        "sample_guide_scale", "image"):
            assert getattr(args, name) == default, name
    assert (args.task, args.sample_steps, args.sample_shift, args.frame_num) == ("t2v-A14B", 40, 12.0, 81)
    # the official defaults, per task and per expert: the high-noise expert has 26 of the 40 steps
    assert args.cache_plan.parts == {"high": {"threshold": 0.06, "warmup_steps": 7},
                                     "low": {"threshold": 0.06, "warmup_steps": 2}}
    ti2v = script.parse_args(gen, ["--ckpt_dir", ckpt, "--task", "ti2v-5B", "--size", "1280*704"])
    assert ti2v.sample_steps == 50 and ti2v.cache_plan.parts == {None: {"threshold": 0.05, "warmup_steps": 7}}
    monkeypatch.chdir(WAN22_STANDIN)  # generate.py's default image for i2v is relative to the checkout
    i2v = script.parse_args(gen, ["--ckpt_dir", ckpt, "--task", "i2v-A14B", "--thresh_low", "0.1",
                                  "--ret_steps_low", "3"])
    assert i2v.image and i2v.cache_plan.parts == {"high": {"threshold": 0.05, "warmup_steps": 7},
                                                  "low": {"threshold": 0.1, "warmup_steps": 3}}


@pytest.mark.parametrize("extra,expected", [
    (["--thresh", "-0.1"], "--thresh must be a number >= 0, got -0.1"),
    (["--thresh_low", "-1"], "--thresh_low must be a number >= 0, got -1.0"),
    (["--thresh_high", "nan"], "--thresh_high must be a number >= 0, got nan"),
    (["--ret_steps", "-1"], "--ret_steps must be >= 0"),
    (["--sample_steps", "40", "--ret_steps", "30"], "--ret_steps 30 must be smaller than the high-noise expert's steps 26"),
    (["--sample_steps", "40", "--ret_steps_low", "14"],
     "--ret_steps_low 14 must be smaller than the low-noise expert's steps 14"),
    (["--task", "s2v-14B"], "--task s2v-14B is not supported by this script (supported: t2v-A14B, i2v-A14B, ti2v-5B)"),
    (["--task", "animate-14B"], "--task animate-14B is not supported"),
    (["--task", "ti2v-5B", "--size", "1280*704", "--thresh_high", "0.1"],
     "--thresh_high applies to the two-expert tasks (t2v-A14B, i2v-A14B), not --task ti2v-5B"),
    (["--task", "ti2v-5B", "--size", "1280*720"], "Unsupport size 1280*720 for task ti2v-5B"),
    (["--task", "i2v-A14B", "--image", "missing.png"], "input file missing.png does not exist"),
    (["--cache", "teacache"], "TeaCache published no coefficients for Wan2.2"),
    (["--cache", "deltacache"], "no published delta-cache profile for --task t2v-A14B"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(script, gen, ckpt, capsys, extra, expected):
    args, lines = parse(script, gen, ["--ckpt_dir", ckpt, *FAST[:2], *extra], capsys)
    assert args is None and len(lines) == 1 and expected in lines[0], lines


def test_help_states_the_flags_and_defaults():
    result = run_script(["--help"])
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in ("--task", "--offload_model", "--convert_model_dtype", "--cache", "--thresh_high", "--thresh_low",
                 "--ret_steps_low", "--uniform_every"):
        assert flag in text
    assert "(default: 0.06 for t2v-A14B, 0.05 for i2v-A14B and ti2v-5B, the official ones)" in text


def test_run_writes_video_and_a_report_per_expert(ckpt, tmp_path):
    video = tmp_path / "cats.mp4"
    result = run_script(["--ckpt_dir", ckpt, *FAST, "--thresh", "0.5", "--ret_steps", "3", "--save_file", video])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "cats.report.json").read_text())
    modules = report["modules"]
    assert (modules["high"]["dit_calls_total"], modules["low"]["dit_calls_total"]) == (16, 8)  # 8 + 4 steps
    assert report["dit_calls_computed"] == modules["high"]["dit_calls_computed"] + modules["low"]["dit_calls_computed"]
    assert report["dit_calls_computed"] < report["dit_calls_total"] == 24
    assert {"step", "branch", "module", "computed", "reason"} <= set(report["calls"][20])
    assert report["settings"] == {"high": {"threshold": 0.5, "warmup_steps": 3},
                                  "low": {"threshold": 0.5, "warmup_steps": 2}}
    assert "high-noise expert: EasyCache (thresh 0.5, warm-up 3); low-noise expert: EasyCache (thresh 0.5, " \
           "warm-up 2) report for t2v-A14B, 12 steps" in result.stdout
    assert f"high: steps 0-7, DiT calls computed {modules['high']['dit_calls_computed']}/16" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cats.mp4", "cats.report.json", "ckpt"]
    again = run_script(["--ckpt_dir", ckpt, *FAST, "--save_file", video])
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr


def test_ti2v_baseline_through_the_script(ckpt, tmp_path):
    video = tmp_path / "ti2v.mp4"
    result = run_script(["--ckpt_dir", ckpt, "--task", "ti2v-5B", "--size", "1280*704", "--frame_num", "5",
                         "--sample_steps", "12", "--cache", "none", "--save_file", video])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "ti2v.report.json").read_text())
    assert report["cache"] == "none" and report["dit_calls_computed"] == report["dit_calls_total"] == 24
    assert "modules" not in report and "Baseline (no cache)" in result.stdout


def test_calibrate_per_expert_then_magcache_and_teacache(ckpt, tmp_path):
    calibration = tmp_path / "cal.json"
    for seed in (0, 1):
        result = run_script(["--ckpt_dir", ckpt, *FAST[:6], "--base_seed", str(seed), "--calibrate", calibration,
                             "--save_file", tmp_path / f"cal{seed}.mp4"])
        assert result.returncode == 0, result.stderr[-3000:]
    cal = json.loads(calibration.read_text())
    assert set(cal["experts"]) == {"high", "low"}
    assert (len(cal["experts"]["high"]["magcache_ratios"]), len(cal["experts"]["low"]["magcache_ratios"])) == (16, 8)
    assert cal["experts"]["low"]["videos"] == 2 and cal["experts"]["high"]["teacache_coefficients"]
    for method, flags in (("magcache", ["--magcache_ratios", calibration, "--magcache_thresh", "0.5"]),
                          ("teacache", ["--teacache_coefficients", calibration])):
        video = tmp_path / f"{method}.mp4"
        result = run_script(["--ckpt_dir", ckpt, *FAST, "--cache", method, *flags, "--save_file", video])
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(video.with_suffix(".report.json").read_text())
        assert report["cache"] == method and set(report["modules"]) == {"high", "low"}
        assert report["blocks_run"] <= report["blocks_total"]
    teacache = json.loads((tmp_path / "teacache.report.json").read_text())["settings"]
    assert teacache["high"]["coefficients"] == cal["experts"]["high"]["teacache_coefficients"]
    assert teacache["low"]["coefficients"] == cal["experts"]["low"]["teacache_coefficients"]
    result = run_script(["--ckpt_dir", ckpt, *FAST[:4], "--sample_steps", "10", "--calibrate", calibration])
    assert result.returncode == 2 and "was calibrated for another step count" in result.stderr


def test_uniform_policy_per_expert(ckpt, tmp_path):
    video = tmp_path / "u.mp4"
    result = run_script(["--ckpt_dir", ckpt, *FAST, "--cache", "uniform", "--uniform_every", "2", "--uniform_warmup",
                         "2", "--save_file", video])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "u.report.json").read_text())["calls"]
    cond = [r for r in rows if r["branch"] == "cond"]
    # each expert counts from its own first step: its 2-step warm-up, every 2nd step, its last step
    # (the low-noise expert's 4 steps: warm-up 8, 9; schedule 10; last 11)
    assert [r["step"] for r in cond if r["computed"] and r["module"] == "high"] == [0, 1, 2, 4, 6, 7]
    assert [r["step"] for r in cond if r["computed"] and r["module"] == "low"] == [8, 9, 10, 11]
