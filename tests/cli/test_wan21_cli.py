"""wan2_1/easycache_generate.py as a user runs it, inside the stand-in Wan2.1 checkout: generate.py's
own flags and checks plus the cache flags generated from the registry, one-line errors before any
model loads, the video and its report, the peers' flags and the calibration run."""

import json
import os

import pytest
import torch

from easycache.adapters.wan21 import WAN21_TEACACHE_COEFFICIENTS
from helpers import ROOT, WAN21_SCRIPT, WAN21_STANDIN, make_wan21_dit_return_nan
from helpers import run_script as run

FAST = ["--size", "832*480", "--frame_num", "5", "--sample_steps", "12", "--base_seed", "0"]


def run_script(args, cwd=WAN21_STANDIN):
    return run(WAN21_SCRIPT, args, cwd)


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    return str(path)


def parse(wan21_script, generate, argv, capsys):
    """parse_args in-process; returns (exit code or None, stderr lines)."""
    try:
        wan21_script.parse_args(generate, argv)
        code = None
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


def test_parser_is_generate_py_plus_the_cache_flags(wan21_script, wan21_generate, ckpt):
    generate = wan21_generate
    parser = wan21_script.upstream_parser(generate)
    upstream = {a.dest: a.default for a in parser._actions if a.dest != "help"}
    args = wan21_script.parse_args(generate, ["--task", "t2v-1.3B", "--size", "832*480", "--ckpt_dir", ckpt])
    for name, default in upstream.items():
        if name not in ("task", "size", "ckpt_dir", "sample_steps", "sample_shift", "frame_num", "base_seed"):
            assert getattr(args, name) == default, name
    # task-dependent defaults filled by generate.py's own _validate_args
    assert (args.sample_steps, args.sample_shift, args.frame_num) == (50, 5.0, 81)
    assert (args.cache, args.thresh, args.ret_steps, args.overwrite) == ("easycache", 0.05, 10, False)
    from PIL import Image
    image = os.path.join(ckpt, "cat.png")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    i2v = wan21_script.parse_args(generate, ["--task", "i2v-14B", "--size", "832*480", "--ckpt_dir", ckpt,
                                           "--image", image])
    assert (i2v.sample_steps, i2v.sample_shift) == (40, 3.0)


@pytest.mark.parametrize("extra,expected", [
    (["--thresh", "-0.1"], "--thresh must be a number >= 0"),
    (["--ret_steps", "-1"], "--ret_steps must be >= 0"),
    (["--ret_steps", "12"], "--ret_steps 12 must be smaller than --sample_steps 12"),
    (["--task", "t2v-1.3B", "--size", "1280*720"], "Unsupport size 1280*720 for task t2v-1.3B"),
    (["--task", "i2v-14B"], "--task i2v-14B needs --image"),
    (["--task", "i2v-14B", "--image", "missing.png"], "input file missing.png does not exist"),
    (["--task", "flf2v-14B", "--first_frame", "a.png"], "needs both --first_frame and --last_frame"),
    (["--thresh", "abc"], "invalid float value"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(wan21_script, wan21_generate, ckpt, capsys, extra, expected):
    argv = ["--task", "t2v-1.3B", "--ckpt_dir", ckpt, *FAST, *extra]
    code, lines = parse(wan21_script, wan21_generate, argv, capsys)
    assert code == 2
    assert len(lines) == 1 and expected in lines[0], lines


def test_missing_checkpoint_dir(wan21_script, wan21_generate, capsys, tmp_path):
    for argv, expected in ((["--task", "t2v-1.3B"], "--ckpt_dir is required"),
                           (["--ckpt_dir", str(tmp_path / "nope")], "is not a directory")):
        code, lines = parse(wan21_script, wan21_generate, [*argv, *FAST], capsys)
        assert code == 2 and len(lines) == 1 and expected in lines[0]


def test_existing_output_is_refused_before_loading(wan21_script, wan21_generate, ckpt, capsys, tmp_path):
    video = tmp_path / "out.mp4"
    video.write_bytes(b"keep me")
    code, lines = parse(wan21_script, wan21_generate,
                        ["--task", "t2v-1.3B", "--ckpt_dir", ckpt, "--save_file", str(video), *FAST], capsys)
    assert code == 2 and "exists; pass --overwrite" in lines[0]
    assert video.read_bytes() == b"keep me"


def test_bad_input_end_to_end_exits_before_any_model_runs(ckpt):
    result = run_script(["--task", "t2v-1.3B", "--ckpt_dir", ckpt, *FAST, "--thresh", "-1"])
    assert result.returncode == 2
    assert result.stderr.strip() == "easycache_generate.py: error: --thresh must be a number >= 0, got -1.0"
    assert result.stdout == ""


def test_outside_a_wan_checkout_says_so(tmp_path):
    result = run_script(["--help"], cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("easycache_generate.py: error: generate.py and wan/ not found")


def test_help_shows_upstream_and_cache_flags():
    result = run_script(["--help"])
    assert result.returncode == 0
    for flag in ("--task", "--sample_guide_scale", "--ulysses_size", "--cache", "--thresh", "--ret_steps", "--overwrite"):
        assert flag in result.stdout


def test_run_writes_video_and_report_that_match(ckpt, tmp_path):
    video = tmp_path / "cat.mp4"
    result = run_script(["--task", "t2v-1.3B", "--ckpt_dir", ckpt, *FAST, "--thresh", "0.5", "--ret_steps", "3",
                         "--save_file", str(video)])
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "cat.report.json").read_text())
    computed = sum(c["computed"] for c in report["calls"])
    assert report["dit_calls_computed"] == computed < report["dit_calls_total"] == 24
    assert f"DiT calls computed: {computed}/24" in result.stdout
    assert report["arguments"]["thresh"] == 0.5 and report["arguments"]["ret_steps"] == 3
    assert {"step", "branch", "computed", "k", "eps", "E", "reason"} <= set(report["calls"][8])
    assert video.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.mp4", "cat.report.json", "ckpt"]

    again = run_script(["--task", "t2v-1.3B", "--ckpt_dir", ckpt, *FAST, "--save_file", str(video)])
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr


def test_baseline_switch_and_overwrite(ckpt, tmp_path):
    video = tmp_path / "base.mp4"
    video.write_bytes(b"old")
    result = run_script(["--task", "t2v-1.3B", "--ckpt_dir", ckpt, *FAST, "--cache", "none", "--overwrite",
                         "--save_file", str(video)])
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "base.report.json").read_text())
    assert report["cache"] == "none" and report["dit_calls_computed"] == 24
    assert "Baseline (no cache)" in result.stdout and video.read_bytes() != b"old"


def test_failed_save_leaves_nothing_behind(ckpt, tmp_path):
    video = tmp_path / "clip.unknownformat"
    result = run_script(["--task", "t2v-1.3B", "--ckpt_dir", ckpt, *FAST, "--save_file", str(video)])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"easycache_generate.py: error: could not write {video}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_text_to_image_task(ckpt, tmp_path):
    image = tmp_path / "img.png"
    result = run_script(["--task", "t2i-14B", "--size", "832*480", "--ckpt_dir", ckpt, "--sample_steps", "12",
                         "--ret_steps", "3", "--thresh", "0.5", "--save_file", str(image)])
    assert result.returncode == 0, result.stderr
    assert image.stat().st_size > 0
    assert json.loads((tmp_path / "img.report.json").read_text())["dit_calls_computed"] < 24


# --- the peers, the baselines and the calibration run ----------------------------------------------

def run_cli(args, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir(exist_ok=True)
    return run_script(["--ckpt_dir", str(ckpt), "--size", "832*480", "--frame_num", "5", "--sample_steps", "12",
                       "--task", "t2v-1.3B", *args])


def test_cli_teacache_run_and_its_errors(tmp_path):
    video = tmp_path / "tea.mp4"
    result = run_cli(["--base_seed", "0", "--cache", "teacache", "--teacache_thresh", "0.5", "--save_file", str(video)],
                     tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "tea.report.json").read_text())
    assert report["cache"] == "teacache" and report["threshold"] == 0.5
    assert report["coefficients"] == WAN21_TEACACHE_COEFFICIENTS[("t2v-1.3B", False)]
    assert "TeaCache (thresh 0.5)" in result.stdout

    from PIL import Image
    frame = tmp_path / "frame.png"
    Image.new("RGB", (64, 48), (20, 30, 200)).save(frame)
    result = run_cli(["--task", "flf2v-14B", "--first_frame", frame, "--last_frame", frame, "--cache", "teacache"],
                     tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("easycache_generate.py: error: TeaCache published no coefficients for "
                                     "--task flf2v-14B; pass --teacache_coefficients c4,c3,c2,c1,c0")
    result = run_cli(["--cache", "teacache", "--teacache_coefficients", "1,x"], tmp_path)
    assert result.returncode == 2 and "must be comma-separated numbers" in result.stderr


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
    result = run_cli(["--cache", "teacache", "--use_ret_steps", "--teacache_coefficients", str(calibration)], tmp_path)
    assert result.returncode == 2 and "holds no TeaCache fit for --use_ret_steps" in result.stderr


def test_magcache_without_ratios_is_one_line(tmp_path):
    result = run_cli(["--cache", "magcache"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("easycache_generate.py: error: --cache magcache needs --magcache_ratios "
                                     "FILE: record one with --calibrate FILE")


def test_cli_deltacache_run_and_its_errors(tmp_path):
    result = run_cli(["--cache", "deltacache"], tmp_path)
    assert result.returncode == 2 and result.stderr.strip().endswith(
        "no published delta-cache profile for --task t2v-1.3B (only Wan2.1 t2v-14B); pass --delta_foreground with "
        "the blocks that must always run")
    result = run_cli(["--cache", "deltacache", "--delta_foreground", "5"], tmp_path)
    assert result.returncode == 2 and "must lie in 0..1 for --task t2v-1.3B" in result.stderr
    result = run_cli(["--cache", "deltacache", "--delta_interval", "0"], tmp_path)
    assert result.returncode == 2 and "--delta_interval must be >= 1, got 0" in result.stderr
    video = tmp_path / "d.mp4"
    result = run_cli(["--base_seed", "0", "--cache", "deltacache", "--delta_foreground", "1", "--delta_warmup", "3",
                      "--delta_interval", "4", "--save_file", str(video)], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "d.report.json").read_text())
    assert report["cache"] == "deltacache" and report["dit_calls_computed"] == 10
    assert report["blocks_run"] == 2 * 5 * 2 + 2 * 7


def test_uniform_policy_is_selectable_with_its_flags(tmp_path):
    video = tmp_path / "u.mp4"
    result = run_cli(["--base_seed", "0", "--cache", "uniform", "--uniform_every", "3", "--uniform_warmup", "2",
                      "--save_file", str(video)], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "u.report.json").read_text())
    assert report["cache"] == "uniform" and (report["every"], report["warmup_steps"]) == (3, 2)
    # steps 0, 1 warm-up, then 2, 5, 8 and the last, 11: both branches
    assert [c["step"] for c in report["calls"] if c["computed"] and c["branch"] == "cond"] == [0, 1, 2, 5, 8, 11]
    assert "Uniform reuse (every 3, warm-up 2) report" in result.stdout
    result = run_cli(["--cache", "uniform", "--uniform_warmup", "12"], tmp_path)
    assert result.returncode == 2 and "--uniform_warmup 12 must be smaller than --sample_steps 12" in result.stderr


def test_a_nan_from_the_dit_writes_no_video_and_fails(wan21_script, wan21_generate, ckpt, tmp_path, monkeypatch,
                                                      capsys):
    video = tmp_path / "nan.mp4"
    args = wan21_script.parse_args(wan21_generate, ["--task", "t2v-1.3B", "--ckpt_dir", ckpt, *FAST,
                                                    "--save_file", str(video)])
    make_wan21_dit_return_nan(monkeypatch, wan21_generate)
    with pytest.raises(wan21_script.InvalidOutput, match=r"nan.mp4 not written: the DiT returned NaN or Inf on 24 call"):
        wan21_script.run(wan21_generate, args)
    captured = capsys.readouterr()
    assert "easycache: error: the DiT returned NaN or Inf at step 0 (cond branch)" in captured.err
    assert "nan.mp4 (not written: invalid)" in captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "nan.report.json"]  # the report, not the video
    report = json.loads((tmp_path / "nan.report.json").read_text())
    assert report["nonfinite_calls"][:2] == [{"step": 0, "branch": "cond"}, {"step": 0, "branch": "uncond"}]
