"""hunyuanvideo/easycache_sample_video.py as a user runs it, inside the stand-in HunyuanVideo checkout:
hyvideo/config.py's own flags and checks plus the cache flags generated from the registry (kebab
case, snake-case aliases), one-line errors before any model loads, the video and its report, the
peers' flags and the calibration run."""

import json
import sys

import pytest

from easycache.adapters.hunyuanvideo import HUNYUAN_SINGLE_CACHED, HUNYUAN_SINGLE_REFRESH_STEPS
from helpers import HUNYUAN_SCRIPT, HUNYUAN_STANDIN
from helpers import run_script as run

FAST = ["--video-size", "64", "64", "--video-length", "5", "--infer-steps", "12", "--seed", "0", "--flow-reverse",
        "--prompt", "a cat walks on the grass"]
STEPS = 12


@pytest.fixture(scope="module")
def hy_script(hunyuan_script):
    return hunyuan_script


@pytest.fixture(scope="module")
def sample_video(hunyuan_sample_video):
    return hunyuan_sample_video


@pytest.fixture
def weights(tmp_path):
    """--model-base and --dit-weight flags pointing at existing (stand-in) weights."""
    base = tmp_path / "ckpts"
    (base / "transformers").mkdir(parents=True)
    (base / "transformers" / "mp_rank_00_model_states.pt").write_bytes(b"stand-in")
    return ["--model-base", str(base), "--dit-weight", str(base / "transformers" / "mp_rank_00_model_states.pt")]


def run_script(args, cwd=HUNYUAN_STANDIN):
    return run(HUNYUAN_SCRIPT, args, cwd)


def parse(hy_script, sample_video, argv, capsys):
    """parse_args in-process; returns (exit code or None, stderr lines)."""
    try:
        hy_script.parse_args(sample_video, argv)
        code = None
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


def test_parser_is_hunyuans_plus_the_cache_flags(hy_script, sample_video, weights):
    config = sys.modules[sample_video.parse_args.__module__]
    parser = hy_script.upstream_parser(config.parse_args)
    upstream = {a.dest: a.default for a in parser._actions if a.dest != "help"}
    assert len(upstream) == 51  # hyvideo/config.py's flags
    args = hy_script.parse_args(sample_video, [*weights, "--prompt", "a cat"])
    for name, default in upstream.items():
        if name not in ("model_base", "dit_weight", "prompt"):
            assert getattr(args, name) == default, name
    assert (args.video_size, args.video_length, args.infer_steps, args.flow_shift) == ((720, 1280), 129, 50, 7.0)
    assert (args.embedded_cfg_scale, args.cfg_scale, args.flow_reverse, args.use_cpu_offload) == (6.0, 1.0, False, False)
    assert (args.cache, args.thresh, args.ret_steps, args.overwrite) == ("easycache", 0.025, 5, False)
    assert hy_script.parse_args(sample_video, [*weights, "--prompt", "a", "--ret_steps", "7"]).ret_steps == 7


@pytest.mark.parametrize("extra,expected", [
    (["--thresh", "-0.1"], "--thresh must be a number >= 0"),
    (["--thresh", "nan"], "--thresh must be a number >= 0"),
    (["--ret-steps", "-1"], "--ret-steps must be >= 0"),
    (["--ret-steps", "12"], "--ret-steps 12 must be smaller than --infer-steps 12"),
    (["--video-size", "540", "960"], "the height must be a positive multiple of 16"),
    (["--video-size", "544", "950"], "the width must be a positive multiple of 16"),
    (["--video-size", "544", "960", "3"], "--video-size takes HEIGHT WIDTH"),
    (["--video-length", "128"], "--video-length must be 4n+1"),
    (["--infer-steps", "0"], "--infer-steps must be >= 1"),
    (["--latent-channels", "16"], "Latent channels (16) must match the VAE channels (16)"),
    (["--ulysses-degree", "2"], "launch with torchrun --nproc_per_node=2"),
    (["--ulysses-degree", "2", "--use-cpu-offload"], "--use-cpu-offload cannot be combined"),
    (["--thresh", "abc"], "invalid float value"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(hy_script, sample_video, weights, capsys, monkeypatch,
                                                   extra, expected):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code, lines = parse(hy_script, sample_video, [*weights, *FAST, *extra], capsys)
    assert code == 2
    assert len(lines) == 1 and expected in lines[0], lines


def test_sequence_parallel_sizes_are_checked_before_loading(hy_script, sample_video, weights, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    code, lines = parse(hy_script, sample_video, [*weights, *FAST, "--video-size", "544", "960",
                                                  "--ulysses-degree", "8"], capsys)
    assert code == 2 and "cannot be split over 8 ranks: height/16 (34) or width/16 (60)" in lines[0]
    args = hy_script.parse_args(sample_video, [*weights, *FAST, "--video-size", "720", "1280", "--ulysses-degree", "8"])
    assert args.ulysses_degree == 8  # 1280/16 = 80 splits over 8 ranks


def test_missing_weights_and_prompt(hy_script, sample_video, weights, capsys, tmp_path):
    for argv, expected in (
            ([*FAST, "--model-base", str(tmp_path / "nope"), weights[2], weights[3]], "--model-base"),
            ([*FAST, weights[0], weights[1], "--dit-weight", str(tmp_path / "missing.pt")], "does not exist"),
            ([*FAST, weights[0], weights[1], "--dit-weight", weights[1]], "holds no *.pt weights"),
            ([*weights, *FAST[:-2]], "--prompt is required")):
        code, lines = parse(hy_script, sample_video, argv, capsys)
        assert code == 2 and len(lines) == 1 and expected in lines[0], lines


def test_bad_input_end_to_end_exits_before_any_model_runs(weights):
    result = run_script([*weights, *FAST, "--thresh", "-1"])
    assert result.returncode == 2
    assert result.stderr.strip() == "easycache_sample_video.py: error: --thresh must be a number >= 0, got -1.0"
    assert result.stdout == ""


def test_outside_a_hunyuan_checkout_says_so(tmp_path):
    result = run_script(["--help"], cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        "easycache_sample_video.py: error: sample_video.py and hyvideo/ not found")


def test_help_shows_upstream_and_cache_flags():
    result = run_script(["--help"])
    assert result.returncode == 0
    for flag in ("--video-size", "--use-cpu-offload", "--ulysses-degree", "--cache", "--thresh", "--ret-steps",
                 "--overwrite"):
        assert flag in result.stdout


@pytest.mark.parametrize("cfg", [[], ["--cfg-scale", "5.0"]])
def test_run_writes_video_and_report_that_match(weights, tmp_path, cfg):
    out = tmp_path / "results"
    result = run_script([*weights, *FAST, *cfg, "--thresh", "0.3", "--ret-steps", "3", "--save-path", str(out)])
    assert result.returncode == 0, result.stderr
    videos = sorted(out.glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0
    assert "seed0_a cat walks on the grass" in videos[0].name
    report = json.loads(videos[0].with_suffix(".report.json").read_text())
    computed = sum(c["computed"] for c in report["calls"])
    assert report["dit_calls_computed"] == computed < report["dit_calls_total"] == 12
    assert f"DiT calls computed: {computed}/12" in result.stdout
    assert report["arguments"]["thresh"] == 0.3 and report["arguments"]["ret_steps"] == 3
    assert {"step", "branch", "computed", "k", "eps", "E", "reason"} <= set(report["calls"][8])
    assert sorted(p.name for p in out.iterdir()) == sorted([videos[0].name, videos[0].stem + ".report.json"])


def test_baseline_switch_runs_every_step(weights, tmp_path):
    out = tmp_path / "results"
    result = run_script([*weights, *FAST, "--cache", "none", "--save-path", str(out)])
    assert result.returncode == 0, result.stderr
    report = json.loads(next(out.glob("*.report.json")).read_text())
    assert report["cache"] == "none" and report["dit_calls_computed"] == 12
    assert "Baseline (no cache)" in result.stdout


def test_existing_video_is_kept_unless_overwrite(hy_script, tmp_path):
    """Same-second, same-seed names collide; the finished video is then refused, not clobbered."""
    import argparse
    video = tmp_path / "v.mp4"
    video.write_bytes(b"keep me")
    writes = []
    save = hy_script.atomic_saver(lambda videos, path, fps: writes.append(path) or open(path, "wb").write(b"new"),
                                  argparse.Namespace(overwrite=False), hy_script.RunOutputs())
    with pytest.raises(hy_script.OutputError, match="exists; pass --overwrite"):
        save(None, str(video), fps=24)
    assert video.read_bytes() == b"keep me"
    outputs = hy_script.RunOutputs()
    hy_script.atomic_saver(lambda videos, path, fps: open(path, "wb").write(b"new"),
                           argparse.Namespace(overwrite=True), outputs)(None, str(video), fps=24)
    assert video.read_bytes() == b"new" and outputs.saved == [str(video)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_failed_save_leaves_nothing_behind(hy_script, tmp_path):
    import argparse

    def broken(videos, path, fps):
        open(path, "wb").write(b"half a video")
        raise OSError("disk full")
    outputs = hy_script.RunOutputs()
    with pytest.raises(OSError, match="disk full"):
        hy_script.atomic_saver(broken, argparse.Namespace(overwrite=False), outputs)(None, str(tmp_path / "v.mp4"),
                                                                                      fps=24)
    assert outputs.saved == [] and list(tmp_path.iterdir()) == []


# --- the peers, the baselines and the calibration run ----------------------------------------------

@pytest.fixture
def small(tmp_path):
    (tmp_path / "dit.pt").write_bytes(b"stand-in")
    return ["--model-base", str(tmp_path), "--dit-weight", str(tmp_path / "dit.pt"), "--prompt", "a cat",
            "--video-size", "64", "64", "--video-length", "5", "--infer-steps", str(STEPS), "--seed", "0",
            "--flow-reverse"]


def parse_peer(hy_script, sample_video, argv, capsys):
    try:
        return hy_script.parse_args(sample_video, argv), []
    except SystemExit as exit_:
        assert exit_.code == 2
        return None, capsys.readouterr().err.strip().splitlines()


def test_peer_flags_and_published_defaults(sample_video, hy_script, small, capsys):
    from easycache.adapters.hunyuanvideo import HUNYUAN_TEACACHE_COEFFICIENTS
    args, _ = parse_peer(hy_script, sample_video, [*small, "--cache", "teacache"], capsys)
    spec, settings = args.cache_plan.spec, args.cache_plan.parts[None]
    assert settings["threshold"] == 0.1 and settings["coefficients"] == list(HUNYUAN_TEACACHE_COEFFICIENTS)
    args, _ = parse_peer(hy_script, sample_video, [*small, "--cache", "deltacache"], capsys)
    settings = args.cache_plan.parts[None]
    assert settings["cached"] == {"double": list(range(6, 20)), "single": list(HUNYUAN_SINGLE_CACHED)}
    assert settings["stack_refresh_steps"] == {"single": list(HUNYUAN_SINGLE_REFRESH_STEPS)}
    assert settings["warmup_steps"] == settings["interval"] == 6
    args, _ = parse_peer(hy_script, sample_video, [*small, "--cache", "teacache", "--teacache_coefficients", "1,0"],
                         capsys)
    assert args.cache_plan.parts[None]["coefficients"] == [1.0, 0.0]
    defaults = hy_script.parse_args(sample_video, small)
    assert (defaults.magcache_thresh, defaults.magcache_K, defaults.retention_ratio) == (0.24, 6, 0.2)
    assert defaults.uniform_warmup == 5 and "--use-ret-steps" not in hy_script.upstream_parser(
        sys.modules[sample_video.parse_args.__module__].parse_args).format_help()


@pytest.mark.parametrize("extra,expected", [
    (["--cache", "teacache", "--teacache-thresh", "-1"], "--teacache-thresh must be a number >= 0"),
    (["--cache", "teacache", "--teacache-coefficients", "1,x"], "--teacache-coefficients must be comma-separated"),
    (["--cache", "magcache"], "--cache magcache needs --magcache-ratios FILE"),
    (["--cache", "magcache", "--magcache-ratios", "/nonexistent.json"], "cannot read it as JSON"),
    (["--cache", "deltacache", "--delta-interval", "0"], "--delta-interval must be >= 1"),
    (["--cache", "deltacache", "--delta-double-cached", "6-x"], "--delta-double-cached must be comma-separated"),
    (["--cache", "deltacache", "--delta-single-cached", "30-45"], "has 40 single-stream blocks"),
    (["--cache", "teacache", "--calibrate", "cal.json"], "--calibrate runs without a cache"),
    (["--cache", "uniform", "--uniform-every", "0"], "--uniform-every must be >= 1"),
    (["--cache", "uniform", "--uniform-warmup", "12"], "--uniform-warmup 12 must be smaller than --infer-steps 12"),
])
def test_peer_errors_are_one_line(sample_video, hy_script, small, capsys, extra, expected):
    args, err = parse_peer(hy_script, sample_video, [*small, *extra], capsys)
    assert args is None and len(err) == 1 and expected in err[0], err


def test_cli_calibrate_then_each_method(sample_video, hy_script, small, tmp_path, capsys):
    """run(): the stand-in's sample_video.main() with each --cache; the report matches the run."""
    calibration = str(tmp_path / "cal.json")
    runs = [["--calibrate", calibration], ["--calibrate", calibration],
            ["--cache", "magcache", "--magcache-ratios", calibration, "--magcache-thresh", "0.5"],
            ["--cache", "teacache", "--teacache-coefficients", calibration],
            ["--cache", "deltacache", "--delta-double-cached", "1", "--delta-single-cached", "0,2",
             "--delta-warmup", "3", "--delta-interval", "3", "--delta-single-steps", "5,9"],
            ["--cache", "uniform", "--uniform-every", "3", "--uniform-warmup", "2"]]
    for i, extra in enumerate(runs):
        out = tmp_path / f"run{i}"
        args = hy_script.parse_args(sample_video, [*small, "--save-path", str(out), *extra])
        report = hy_script.run(sample_video, args)
        saved = json.loads(next(out.glob("*.report.json")).read_text())
        assert saved.get("blocks_run") == report.get("blocks_run") and saved["cache"] == args.cache
        assert saved["dit_calls_total"] == STEPS
    assert json.loads(open(calibration).read())["videos"] == 2
    printed = capsys.readouterr().out
    assert "Calibration run (no cache)" in printed and "MagCache (thresh 0.5, K 6" in printed
    assert "Delta cache (full steps: first 3, then every 3; single blocks on 5,9)" in printed
    assert "transformer blocks run: 40/60" in printed
    assert "Uniform reuse (every 3, warm-up 2) report" in printed and "DiT calls computed: 6/12" in printed
