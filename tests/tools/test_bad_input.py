"""One table of bad input, run through every command users run: each row must end with one
`error:` line naming the problem, exit status 2, no traceback, and no file created. The drop-in
scripts run in their stand-in checkouts, whose models run on the CPU: the argument checks never
need a GPU (a run on a machine without one stops with one line instead; see the last rows)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import (HUNYUAN_SCRIPT, HUNYUAN_STANDIN, ROOT, WAN21_SCRIPT, WAN21_STANDIN, WAN22_SCRIPT, WAN22_STANDIN)

WAN21 = ["--task", "t2v-1.3B", "--size", "832*480", "--frame_num", "5", "--sample_steps", "12", "--base_seed", "0"]
WAN22 = ["--task", "t2v-A14B", "--size", "1280*720", "--frame_num", "5", "--sample_steps", "12", "--base_seed", "0"]
HUNYUAN = ["--video-size", "64", "64", "--video-length", "5", "--infer-steps", "12", "--seed", "0", "--flow-reverse",
           "--prompt", "a cat walks on the grass"]
METRICS = os.path.join(ROOT, "tools", "video_metrics.py")
DEMO = os.path.join(ROOT, "tools", "demo.py")
BENCHMARK = os.path.join(ROOT, "tools", "benchmark.py")
UNWRITABLE = "/sys"  # even root cannot create files there

# (command, arguments, what the error line says); {d} is the test's folder, holding: ckpt/ (a
# checkpoint folder), empty.png (0 bytes), corrupt.png (not an image), image.png, a.mp4 and b.mp4
# (two 8-frame videos), short.mp4 (4 frames), corrupt.mp4, empty.json, corrupt.json, dit.pt
TABLE = [
    # Wan2.1
    ("wan21", ["--thresh", "-0.1"], "--thresh must be a number >= 0, got -0.1"),
    ("wan21", ["--thresh", "nan"], "--thresh must be a number >= 0, got nan"),
    ("wan21", ["--thresh", "inf"], "--thresh must be a number >= 0, got inf"),
    ("wan21", ["--ret_steps", "12"], "--ret_steps 12 must be smaller than --sample_steps 12"),
    ("wan21", ["--ret_steps", "-1"], "--ret_steps must be >= 0, got -1"),
    ("wan21", ["--magcache_K", "-2"], "--magcache_K must be >= 0, got -2"),
    ("wan21", ["--retention_ratio", "1.5"], "--retention_ratio must lie in [0, 1], got 1.5"),
    ("wan21", ["--ckpt_dir", "{d}/missing"], "--ckpt_dir {d}/missing is not a directory"),
    ("wan21", ["--ckpt_dir", "{d}/image.png"], "--ckpt_dir {d}/image.png is not a directory"),
    ("wan21", ["--task", "i2v-14B", "--image", "{d}/missing.png"], "input file {d}/missing.png does not exist"),
    ("wan21", ["--task", "i2v-14B", "--image", "{d}/empty.png"], "input file {d}/empty.png is empty"),
    ("wan21", ["--task", "i2v-14B", "--image", "{d}/corrupt.png"], "input file {d}/corrupt.png is not an image"),
    ("wan21", ["--task", "i2v-14B", "--image", "{d}/ckpt"], "input file {d}/ckpt is a folder"),
    ("wan21", ["--task", "i2v-14B", "--image", "{d}/image.png", "--save_file", "{d}/image.png", "--overwrite"],
     "--save_file {d}/image.png is the input {d}/image.png"),
    ("wan21", ["--save_file", UNWRITABLE + "/v.mp4"], "--save_file /sys/v.mp4: cannot write in /sys"),
    ("wan21", ["--save_file", "{d}/ckpt"], "--save_file {d}/ckpt is a folder"),
    ("wan21", ["--save_file", "{d}/a.mp4"], "{d}/a.mp4 exists; pass --overwrite to replace it"),
    ("wan21", ["--cache", "magcache", "--magcache_ratios", "{d}/corrupt.json"], "cannot read it as JSON"),
    ("wan21", ["--cache", "magcache", "--magcache_ratios", "{d}/empty.json"], "cannot read it as JSON"),
    ("wan21", ["--calibrate", "{d}/corrupt.json"], "--calibrate {d}/corrupt.json: cannot read it as JSON"),
    # Wan2.2
    ("wan22", ["--thresh_low", "-1"], "--thresh_low must be a number >= 0, got -1.0"),
    ("wan22", ["--thresh_high", "inf"], "--thresh_high must be a number >= 0, got inf"),
    ("wan22", ["--ret_steps", "8"], "--ret_steps 8 must be smaller than the high-noise expert's steps 8"),
    ("wan22", ["--ret_steps_low", "4"], "--ret_steps_low 4 must be smaller than the low-noise expert's steps 4"),
    ("wan22", ["--task", "s2v-14B"], "--task s2v-14B is not supported by this script"),
    ("wan22", ["--task", "i2v-A14B", "--image", "{d}/corrupt.png"], "input file {d}/corrupt.png is not an image"),
    ("wan22", ["--save_file", UNWRITABLE + "/v.mp4"], "cannot write in /sys"),
    # HunyuanVideo
    ("hunyuan", ["--thresh", "nan"], "--thresh must be a number >= 0, got nan"),
    ("hunyuan", ["--infer-steps", "0"], "--infer-steps must be >= 1, got 0"),
    ("hunyuan", ["--video-size", "540", "960"], "the height must be a positive multiple of 16"),
    ("hunyuan", ["--model-base", "{d}/missing"], "--model-base {d}/missing is not a directory"),
    ("hunyuan", ["--dit-weight", "{d}/empty.png"], "--dit-weight {d}/empty.png is empty"),
    ("hunyuan", ["--dit-weight", "{d}/ckpt"], "--dit-weight {d}/ckpt holds no *.pt weights"),
    ("hunyuan", ["--save-path", UNWRITABLE + "/results"], "--save-path /sys/results: cannot write in /sys"),
    ("hunyuan", ["--save-path", "{d}/a.mp4"], "--save-path {d}/a.mp4 exists and is not a directory"),
    ("hunyuan", ["--cache", "magcache", "--magcache-ratios", "{d}/corrupt.json"], "cannot read it as JSON"),
    # tools/video_metrics.py
    ("metrics", ["--original", "{d}/missing.mp4", "--generated", "{d}/b.mp4"], "'{d}/missing.mp4' does not exist"),
    ("metrics", ["--original", "{d}/a.mp4", "--generated", "{d}/corrupt.mp4"], "corrupt.mp4"),
    ("metrics", ["--original", "{d}/a.mp4", "--generated", "{d}/empty.png"], "empty.png"),
    ("metrics", ["--original", "{d}/a.mp4", "--generated", "{d}/short.mp4"], "frame count mismatch"),
    ("metrics", ["--original", "{d}/a.mp4", "--generated", "{d}/ckpt"], "a folder without image frames"),
    ("metrics", ["--original", "{d}/a.mp4", "--generated", "{d}/b.mp4", "--json", "{d}/a.mp4"],
     "--json {d}/a.mp4 would write over the input {d}/a.mp4"),
    ("metrics", ["--original", "{d}/a.mp4", "--generated", "{d}/b.mp4", "--csv", "{d}/empty.json"],
     "--csv {d}/empty.json exists; pass --overwrite to replace it"),
    ("metrics", ["--original", "{d}/a.mp4", "--generated", "{d}/b.mp4", "--json", UNWRITABLE + "/m.json"],
     "cannot write in /sys"),
    ("metrics", ["--original", "{d}/a.mp4", "--generated", "{d}/b.mp4", "--json", "{d}/ckpt"],
     "--json {d}/ckpt is a folder"),
    ("metrics", ["--original", "{d}/a.mp4", "--generated", "{d}/b.mp4", "--chunk_frames", "0"],
     "--chunk_frames must be >= 1"),
    # tools/demo.py and tools/benchmark.py
    ("demo", ["--thresh", "nan"], "--thresh must be a number >= 0, got nan"),
    ("demo", ["--thresh=-inf"], "--thresh must be a number >= 0, got -inf"),
    ("demo", ["--ret_steps", "30"], "--ret_steps must lie in 0..29"),
    ("demo", ["--steps", "0"], "--steps must be >= 2, got 0"),
    ("demo", ["--prompt", "a purple circle moves left"], "tinywan does not know 'purple'"),
    ("demo", ["--out", UNWRITABLE + "/demo"], "--out /sys/demo: cannot write in /sys"),
    ("demo", ["--out", "{d}/a.mp4"], "--out {d}/a.mp4: not a folder"),
    ("demo", ["--weights", "{d}/missing.safetensors"], "--weights {d}/missing.safetensors does not exist"),
    ("demo", ["--weights", "{d}/corrupt.json"], "cannot read it as tinywan weights"),
    ("demo", ["--weights", "{d}/ckpt"], "--weights {d}/ckpt is a folder"),
    ("benchmark", ["--held_out", "1"], "--held_out must be >= 2, got 1"),
    ("benchmark", ["--tuning", "2", "--calibration_videos", "3"], "--calibration_videos 3 must not exceed --tuning 2"),
    ("benchmark", ["--warmup", "30"], "--warmup must lie in 0..29"),
    ("benchmark", ["--out", UNWRITABLE + "/bench"], "cannot write in /sys"),
    ("benchmark", ["--weights", "{d}/corrupt.json"], "cannot read it as tinywan weights"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import imageio.v2 as imageio
    from PIL import Image
    d = tmp_path_factory.mktemp("inputs")
    (d / "ckpt").mkdir()
    (d / "empty.png").write_bytes(b"")
    (d / "corrupt.png").write_bytes(b"not an image at all")
    (d / "corrupt.mp4").write_bytes(b"\x00\x01 not a video")
    (d / "empty.json").write_text("")
    (d / "corrupt.json").write_text("{ not json")
    (d / "dit.pt").write_bytes(b"stand-in")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(d / "image.png")
    frames = (np.random.default_rng(0).random((8, 32, 32, 3)) * 255).astype(np.uint8)
    for name, count in (("a.mp4", 8), ("b.mp4", 8), ("short.mp4", 4)):
        imageio.mimsave(d / name, list(frames[:count]), fps=8, macro_block_size=1)
    return d


def command(name, d):
    """(argv, cwd) of a command with its required arguments filled in."""
    if name == "wan21":
        return [sys.executable, WAN21_SCRIPT, *WAN21, "--ckpt_dir", f"{d}/ckpt"], WAN21_STANDIN
    if name == "wan22":
        return [sys.executable, WAN22_SCRIPT, *WAN22, "--ckpt_dir", f"{d}/ckpt"], WAN22_STANDIN
    if name == "hunyuan":
        return ([sys.executable, HUNYUAN_SCRIPT, *HUNYUAN, "--model-base", str(d), "--dit-weight", f"{d}/dit.pt"],
                HUNYUAN_STANDIN)
    if name == "metrics":
        return [sys.executable, METRICS], str(d)
    return [sys.executable, DEMO if name == "demo" else BENCHMARK], str(d)


def snapshot(*folders):
    return {os.path.join(root, f) for folder in folders for root, _, files in os.walk(folder) for f in files}


@pytest.mark.parametrize("name,args,expected", TABLE, ids=[f"{row[0]}:{' '.join(row[1])}"[:70] for row in TABLE])
def test_bad_input_is_one_error_line_and_nothing_written(folder, name, args, expected):
    argv, cwd = command(name, folder)
    argv += [a.format(d=folder) for a in args]
    before = snapshot(folder, cwd)
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1 and expected.format(d=folder) in errors[0], result.stderr[-2000:]
    assert snapshot(folder, cwd) == before  # nothing created, nothing replaced


@pytest.mark.parametrize("script,cwd,base", [(WAN21_SCRIPT, WAN21_STANDIN, WAN21), (WAN22_SCRIPT, WAN22_STANDIN, WAN22)])
def test_help_and_checks_work_without_a_gpu_and_a_run_needs_one(folder, tmp_path, script, cwd, base):
    """On a machine without a GPU (this one) --help works even where importing the checkout's
    generate.py would ask CUDA for its device (Wan's text encoder does), and a run on a checkout
    that needs CUDA stops with one line before loading anything."""
    checkout = tmp_path / "checkout"  # the stand-in, saying it needs CUDA like the real one
    import shutil
    shutil.copytree(cwd, checkout, ignore=shutil.ignore_patterns("__pycache__"))
    generate = checkout / "generate.py"
    generate.write_text(generate.read_text().replace("RUNS_ON_CPU = True", "RUNS_ON_CPU = False"))
    package = checkout / "wan" / "__init__.py"  # as Wan's t5.py does, through a default argument
    package.write_text("import torch\n_T5_DEVICE = torch.cuda.current_device()\n" + package.read_text())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    help_ = subprocess.run([sys.executable, script, "--help"], cwd=checkout, capture_output=True, text=True, env=env,
                           timeout=300)
    assert help_.returncode == 0 and "--cache" in help_.stdout
    run = subprocess.run([sys.executable, script, *base, "--ckpt_dir", f"{folder}/ckpt"], cwd=checkout,
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].endswith(
        "needs a CUDA GPU to run and none is visible (torch.cuda.is_available() is False); --help and the argument "
        "checks work without one")
