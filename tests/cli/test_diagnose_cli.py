"""--diagnose on every drop-in script, each in its stand-in checkout: an uncached run that prints the
estimators' table, writes the JSON (per expert for Wan2.2's A14B) and the plot next to it, and the
video with its report; its files replaced only with --overwrite; refused in one line before any
model loads when combined with a cache or --calibrate, or when its files cannot be written."""

import json
import sys

import pytest
import torch

from helpers import (HUNYUAN_SCRIPT, HUNYUAN_STANDIN, SVG_SCRIPT, WAN21_SCRIPT, WAN21_STANDIN, WAN22_SCRIPT,
                     WAN22_STANDIN, make_wan21_dit_return_nan, run_script)
from hosts import import_checkout

ESTIMATORS = ["delta", "v", "delta-extrap", "v-extrap"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WAN21 = ["--task", "t2v-1.3B", "--size", "832*480", "--frame_num", "5", "--sample_steps", "12", "--base_seed", "0"]
# 20 steps: 13 on the high-noise expert, 7 on the low-noise one (at 12 it would have 4: no gap 2)
WAN22 = ["--task", "t2v-A14B", "--size", "1280*720", "--frame_num", "5", "--sample_steps", "20", "--base_seed", "0"]
HUNYUAN = ["--video-size", "64", "64", "--video-length", "5", "--infer-steps", "12", "--seed", "0", "--flow-reverse",
           "--prompt", "a cat walks on the grass"]


def table_rows(stdout):
    """The printed table's rows: estimator -> its three numbers."""
    rows = {}
    for line in stdout.splitlines():
        words = line.split()
        if len(words) == 4 and words[0] in ESTIMATORS:
            rows.setdefault(words[0], []).append([None if w == "n/a" else float(w) for w in words[1:]])
    return rows


def check_diagnosis(result, path, branches, experts=None):
    """Exit 0, the table printed, the JSON and the plot written with the expected structure."""
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Diagnosis run (no cache)" in result.stdout and f"  diagnosis: {path}" in result.stdout
    assert f"  plot: {path.with_suffix('.png')}" in result.stdout
    assert path.with_suffix(".png").read_bytes()[:8] == PNG_SIGNATURE
    data = json.loads(path.read_text())
    assert data["settings"]["gamma"] == 0.5 and data["settings"]["gaps"] == [1, 2, 3]
    assert list(data["settings"]["estimators"]) == ESTIMATORS
    parts = data["experts"] if experts else {None: data}
    assert list(parts) == (experts or [None])
    rows = table_rows(result.stdout)
    assert sorted(rows) == sorted(ESTIMATORS) and all(len(r) == len(parts) for r in rows.values())
    for n, part in enumerate(parts.values()):
        assert list(part["branches"]) == list(branches)
        served = part["last_step"] - part["first_step"] + 1
        for gap in (1, 2, 3):
            for by_gap in part["branches"].values():
                measured = by_gap[str(gap)]
                assert measured["steps"] == list(range(part["first_step"] + 2 * gap, part["last_step"] + 1))
                assert len(measured["s"]) == len(measured["steps"]) == max(served - 2 * gap, 0)
                assert list(measured["errors"]) == ESTIMATORS
                assert all(len(errors) == len(measured["steps"]) for errors in measured["errors"].values())
            for e in ESTIMATORS:
                mean = part["mean"][str(gap)][e]
                assert rows[e][n][gap - 1] == (None if mean is None else pytest.approx(mean, abs=1e-4))
        best = part["best"]
        assert best["gap"] == 2 and best["error"] == min(part["mean"]["2"].values())
    conclusion = [line for line in result.stdout.splitlines() if line.startswith("  best estimator at gap 2: ")]
    assert len(conclusion) == 1
    return data


# --- Wan2.1 -------------------------------------------------------------------------------------

@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    return str(path)


def test_wan21_diagnose_writes_the_table_json_plot_and_video(ckpt, tmp_path):
    diagnosis, video = tmp_path / "diag.json", tmp_path / "v.mp4"
    argv = ["--ckpt_dir", ckpt, *WAN21, "--diagnose", diagnosis]
    result = run_script(WAN21_SCRIPT, [*argv, "--save_file", video], WAN21_STANDIN)
    data = check_diagnosis(result, diagnosis, ["cond", "uncond"])
    assert (data["task"], data["size"], data["sample_steps"]) == ("t2v-1.3B", "832*480", 12)
    assert data["arguments"]["diagnose"] == str(diagnosis) and data["settings"]["s"].startswith("the timestep")
    assert data["branches"]["cond"]["1"]["s"][0] > data["branches"]["cond"]["1"]["s"][-1] > 0  # 1000 sigma, falling
    assert "Diagnosis run (no cache) report for t2v-1.3B, 12 steps:\n  DiT calls computed: 24/24" in result.stdout
    report = json.loads((tmp_path / "v.report.json").read_text())
    assert report["cache"] == "diagnose" and report["dit_calls_computed"] == report["dit_calls_total"] == 24
    assert video.stat().st_size > 0

    again = run_script(WAN21_SCRIPT, [*argv, "--save_file", tmp_path / "w.mp4"], WAN21_STANDIN)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.strip() == f"easycache_generate.py: error: {diagnosis} exists; pass --overwrite to replace it"
    assert not (tmp_path / "w.mp4").exists()


def parse_wan21(script, generate, argv, capsys):
    try:
        return script.parse_args(generate, argv), []
    except SystemExit as exit_:
        assert exit_.code == 2
        return None, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("extra,expected", [
    (["--cache", "teacache"], "--diagnose runs without a cache; drop --cache"),
    (["--cache", "none"], "--diagnose runs without a cache; drop --cache"),
    (["--calibrate", "{d}/cal.json"], "--calibrate and --diagnose are two separate uncached runs; pass one of them"),
])
def test_wan21_diagnose_combinations_are_refused_in_one_line(wan21_script, wan21_generate, ckpt, tmp_path, capsys,
                                                              extra, expected):
    argv = ["--ckpt_dir", ckpt, *WAN21, "--diagnose", str(tmp_path / "d.json"),
            *[a.format(d=tmp_path) for a in extra]]
    args, err = parse_wan21(wan21_script, wan21_generate, argv, capsys)
    assert args is None and len(err) == 1 and err[0].endswith(f": error: {expected}"), err


@pytest.mark.parametrize("target,expected", [
    ("{d}/diag.png", "--diagnose {d}/diag.png: the plot is written next to the JSON as diag.png; name the JSON "
                     "with another extension (e.g. .json)"),
    ("{d}/missing/diag.json", "the directory of --diagnose {d}/missing/diag.json does not exist"),
    ("{d}/ckpt", "--diagnose {d}/ckpt: {d}/ckpt is a folder, expected a file path"),
    ("/sys/diag.json", "--diagnose /sys/diag.json: cannot write in /sys"),
    ("{d}/old.json", "{d}/old.png exists; pass --overwrite to replace it"),  # the plot of an earlier run
])
def test_wan21_diagnose_files_are_checked_before_loading(wan21_script, wan21_generate, ckpt, tmp_path, capsys,
                                                         target, expected):
    (tmp_path / "old.png").write_bytes(b"an earlier plot")
    argv = ["--ckpt_dir", ckpt, *WAN21, "--diagnose", target.format(d=tmp_path)]
    args, err = parse_wan21(wan21_script, wan21_generate, argv, capsys)
    assert args is None and len(err) == 1 and expected.format(d=tmp_path) in err[0], err


@pytest.mark.parametrize("video,target", [("v.json", "v.json"), ("v.mp4", "v.report.json"), ("v.png", "v.json")])
def test_wan21_diagnose_never_writes_over_the_video_or_its_report(wan21_script, wan21_generate, ckpt, tmp_path, capsys,
                                                                  video, target):
    argv = ["--ckpt_dir", ckpt, *WAN21, "--save_file", str(tmp_path / video), "--diagnose", str(tmp_path / target)]
    args, err = parse_wan21(wan21_script, wan21_generate, [*argv, "--overwrite"], capsys)
    assert args is None and len(err) == 1 and "is also a video or report of this run; choose another name" in err[0]


def test_wan21_diagnose_replaces_its_files_with_overwrite(wan21_script, wan21_generate, ckpt, tmp_path, capsys):
    (tmp_path / "old.json").write_text("{}")
    (tmp_path / "old.png").write_bytes(b"an earlier plot")
    args, _ = parse_wan21(wan21_script, wan21_generate, ["--ckpt_dir", ckpt, *WAN21, "--diagnose",
                                                        str(tmp_path / "old.json"), "--overwrite"], capsys)
    assert args.cache == "diagnose" and args.cache_plan.spec is None
    assert wan21_script.cache_title(args) == "Diagnosis run (no cache)"
    assert type(wan21_script.policy_of(args, wan21_script.wan_host(wan21_generate))).__name__ == "EstimatorRecorder"


def test_without_matplotlib_the_run_says_no_plot_in_one_line(wan21_script, wan21_generate, ckpt, tmp_path, capsys,
                                                            monkeypatch):
    diagnosis = tmp_path / "diag.json"
    args = wan21_script.parse_args(wan21_generate, ["--ckpt_dir", ckpt, *WAN21, "--save_file", str(tmp_path / "v.mp4"),
                                                    "--diagnose", str(diagnosis)])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    wan21_script.run(wan21_generate, args)
    out = capsys.readouterr().out
    plot_lines = [line for line in out.splitlines() if line.startswith("  plot:")]
    assert plot_lines == ["  plot: none (matplotlib is not installed; pip install matplotlib for diag.png)"]
    assert json.loads(diagnosis.read_text())["best"]["gap"] == 2 and not diagnosis.with_suffix(".png").exists()


def test_an_invalid_video_records_no_diagnosis(wan21_script, wan21_generate, ckpt, tmp_path, monkeypatch, capsys):
    diagnosis = tmp_path / "diag.json"
    args = wan21_script.parse_args(wan21_generate, ["--ckpt_dir", ckpt, *WAN21, "--save_file", str(tmp_path / "v.mp4"),
                                                    "--diagnose", str(diagnosis)])
    make_wan21_dit_return_nan(monkeypatch, wan21_generate)
    with pytest.raises(wan21_script.InvalidOutput, match="v.mp4 not written"):
        wan21_script.run(wan21_generate, args)
    assert "Diagnosis:" not in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "v.report.json"]


# --- Wan2.2: per expert --------------------------------------------------------------------------

def test_wan22_diagnose_per_expert(ckpt, tmp_path):
    diagnosis = tmp_path / "diag.json"
    result = run_script(WAN22_SCRIPT, ["--ckpt_dir", ckpt, *WAN22, "--save_file", tmp_path / "v.mp4",
                                       "--diagnose", diagnosis], WAN22_STANDIN)
    data = check_diagnosis(result, diagnosis, ["cond", "uncond"], experts=["high", "low"])
    report = json.loads((tmp_path / "v.report.json").read_text())
    for name, part in data["experts"].items():
        module = report["modules"][name]
        assert (part["first_step"], part["last_step"]) == (module["first_step"], module["last_step"])
    high, low = data["experts"]["high"], data["experts"]["low"]
    assert (high["first_step"], high["last_step"], low["first_step"], low["last_step"]) == (0, 12, 13, 19)
    assert "  high-noise expert (steps 0-12):" in result.stdout
    assert "  low-noise expert (steps 13-19):" in result.stdout
    conclusion = next(line for line in result.stdout.splitlines() if line.startswith("  best estimator at gap 2"))
    assert "high-noise expert " in conclusion and "; low-noise expert " in conclusion
    assert report["cache"] == "diagnose" and report["dit_calls_computed"] == 40

    again = run_script(WAN22_SCRIPT, ["--ckpt_dir", ckpt, *WAN22, "--cache", "teacache", "--diagnose",
                                      tmp_path / "other.json"], WAN22_STANDIN)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.strip() == "easycache_generate.py: error: --diagnose runs without a cache; drop --cache"


def test_wan22_second_diagnosis_without_overwrite_is_refused_before_loading(ckpt, tmp_path, capsys):
    from helpers import load_script
    script = load_script(WAN22_SCRIPT, "easycache_generate_wan22_diagnose")
    (tmp_path / "diag.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        script.parse_args(import_checkout(WAN22_STANDIN), ["--ckpt_dir", ckpt, *WAN22, "--diagnose",
                                                           str(tmp_path / "diag.json")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = f": error: {tmp_path / 'diag.json'} exists; pass --overwrite to replace it"
    assert len(err) == 1 and err[0].endswith(expected)


# --- HunyuanVideo and its SVG script ------------------------------------------------------------

@pytest.fixture
def weights(tmp_path):
    (tmp_path / "dit.pt").write_bytes(b"stand-in")
    return ["--model-base", str(tmp_path), "--dit-weight", str(tmp_path / "dit.pt")]


def test_hunyuan_diagnose(weights, tmp_path):
    diagnosis, out = tmp_path / "diag.json", tmp_path / "results"
    argv = [*weights, *HUNYUAN, "--save-path", out, "--diagnose", diagnosis]
    result = run_script(HUNYUAN_SCRIPT, argv, HUNYUAN_STANDIN)
    data = check_diagnosis(result, diagnosis, ["dit"])
    assert (data["video_size"], data["infer_steps"]) == ([64, 64], 12)
    report = json.loads(next(out.glob("*.report.json")).read_text())
    assert report["cache"] == "diagnose" and report["dit_calls_computed"] == report["dit_calls_total"] == 12
    assert len(list(out.glob("*.mp4"))) == 1

    again = run_script(HUNYUAN_SCRIPT, argv, HUNYUAN_STANDIN)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.strip() == (f"easycache_sample_video.py: error: {diagnosis} exists; pass --overwrite to "
                                    "replace it")
    refused = run_script(HUNYUAN_SCRIPT, [*argv[:-1], tmp_path / "other.json", "--cache", "teacache"], HUNYUAN_STANDIN)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "easycache_sample_video.py: error: --diagnose runs without a cache; drop --cache"


def test_svg_diagnose(tmp_path):
    from test_svg_cli import SVG_STANDIN, write_package
    write_package(tmp_path, SVG_STANDIN)
    (tmp_path / "dit.pt").write_bytes(b"stand-in")
    video, diagnosis = tmp_path / "out" / "svg.mp4", tmp_path / "out" / "diag.json"
    video.parent.mkdir()
    argv = ["--video-size", "160", "160", "--video-length", "5", "--infer-steps", "12", "--seed", "0",
            "--flow-reverse", "--prompt", "a cat walks", "--text-len", "16", "--model-base", str(tmp_path),
            "--dit-weight", str(tmp_path / "dit.pt"), "--output_path", str(video), "--pattern", "SVG",
            "--sparsity", "0.6", "--diagnose", str(diagnosis)]
    env = {"PYTHONPATH": HUNYUAN_STANDIN}
    result = run_script(SVG_SCRIPT, argv, tmp_path, env=env, timeout=120)
    data = check_diagnosis(result, diagnosis, ["dit"])
    assert "Diagnosis run (no cache) with SVG (sparsity 0.6) report" in result.stdout
    assert data["infer_steps"] == 12 and video.stat().st_size > 0

    again = run_script(SVG_SCRIPT, [*argv[:-1], str(tmp_path / "out" / "other.json"), "--cache", "uniform"], tmp_path,
                       env=env, timeout=120)
    assert again.returncode == 2
    assert again.stderr.strip() == "hyvideo_svg_easycache.py: error: --diagnose runs without a cache; drop --cache"
