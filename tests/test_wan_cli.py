"""wan2_1/easycache_generate.py as a user runs it, inside the stand-in Wan2.1 checkout."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, WAN_STANDIN

SCRIPT = os.path.join(ROOT, "wan2_1", "easycache_generate.py")
FAST = ["--size", "832*480", "--frame_num", "5", "--sample_steps", "12", "--base_seed", "0"]


def run_script(args, cwd=WAN_STANDIN):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    return str(path)


def parse(wan_script, wan_standin, argv, capsys):
    """parse_args in-process; returns (exit code or None, stderr lines)."""
    generate, _ = wan_standin
    try:
        wan_script.parse_args(generate, argv)
        code = None
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


def test_parser_is_generate_py_plus_the_cache_flags(wan_script, wan_standin, ckpt):
    generate, _ = wan_standin
    parser = wan_script.upstream_parser(generate)
    upstream = {a.dest: a.default for a in parser._actions if a.dest != "help"}
    args = wan_script.parse_args(generate, ["--task", "t2v-1.3B", "--size", "832*480", "--ckpt_dir", ckpt])
    for name, default in upstream.items():
        if name not in ("task", "size", "ckpt_dir", "sample_steps", "sample_shift", "frame_num", "base_seed"):
            assert getattr(args, name) == default, name
    # task-dependent defaults filled by generate.py's own _validate_args
    assert (args.sample_steps, args.sample_shift, args.frame_num) == (50, 5.0, 81)
    assert (args.cache, args.thresh, args.ret_steps, args.overwrite) == ("easycache", 0.05, 10, False)
    i2v = wan_script.parse_args(generate, ["--task", "i2v-14B", "--size", "832*480", "--ckpt_dir", ckpt,
                                           "--image", os.path.join(ROOT, "LICENSE")])
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
def test_bad_input_is_one_line_and_a_non_zero_exit(wan_script, wan_standin, ckpt, capsys, extra, expected):
    argv = ["--task", "t2v-1.3B", "--ckpt_dir", ckpt, *FAST, *extra]
    code, lines = parse(wan_script, wan_standin, argv, capsys)
    assert code == 2
    assert len(lines) == 1 and expected in lines[0], lines


def test_missing_checkpoint_dir(wan_script, wan_standin, capsys, tmp_path):
    for argv, expected in ((["--task", "t2v-1.3B"], "--ckpt_dir is required"),
                           (["--ckpt_dir", str(tmp_path / "nope")], "is not a directory")):
        code, lines = parse(wan_script, wan_standin, [*argv, *FAST], capsys)
        assert code == 2 and len(lines) == 1 and expected in lines[0]


def test_existing_output_is_refused_before_loading(wan_script, wan_standin, ckpt, capsys, tmp_path):
    video = tmp_path / "out.mp4"
    video.write_bytes(b"keep me")
    code, lines = parse(wan_script, wan_standin,
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
