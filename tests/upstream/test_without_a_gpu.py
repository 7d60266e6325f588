"""Opt-in: each drop-in script run as a user runs it, inside a real checkout, on a machine without
a GPU (this one): --help and the argument checks work (importing Wan's generate.py alone would
ask CUDA for its device), and a run stops with one line saying a GPU is needed.

    WAN21_DIR=... WAN22_DIR=... HUNYUAN_DIR=... [*_PYTHON=...] ./test.sh tests/upstream/test_without_a_gpu.py
"""

import os
import subprocess
import sys

import pytest

from helpers import HUNYUAN_SCRIPT, WAN21_SCRIPT, WAN22_SCRIPT

WAN = ["--task", "t2v-1.3B", "--size", "832*480", "--frame_num", "5", "--sample_steps", "12"]
CASES = {  # checkout variable: (script, arguments of a run that is otherwise valid, the checkpoint flag)
    "WAN21": (WAN21_SCRIPT, WAN, "--ckpt_dir"),
    "WAN22": (WAN22_SCRIPT, ["--task", "t2v-A14B", "--size", "1280*720", "--frame_num", "5", "--sample_steps", "12"],
              "--ckpt_dir"),
    "HUNYUAN": (HUNYUAN_SCRIPT, ["--video-size", "64", "64", "--video-length", "5", "--infer-steps", "12",
                                 "--prompt", "a cat"], "--model-base"),
}


# Wan2.2's generate.py imports what only its s2v/animate tasks use; where the test interpreter
# lacks one, a module whose every attribute is a class stands in (as in wan22_checks.py).
OPTIONAL_MODULES = ("decord", "librosa", "peft", "dashscope")
STUB = "def __getattr__(name):\n    return type(name, (), {'__init__': lambda self, *a, **k: None})\n"


def run(name, *args, cwd, stubs=None):
    python = os.environ.get(f"{name}_PYTHON", sys.executable)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    if stubs:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [stubs, env.get("PYTHONPATH")]))
    return subprocess.run([python, CASES[name][0], *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=env)


def stub_missing_modules(name, folder):
    python = os.environ.get(f"{name}_PYTHON", sys.executable)
    missing = subprocess.run([python, "-c", "import importlib.util, sys; print(*[n for n in sys.argv[1:] if "
                              "importlib.util.find_spec(n) is None])", *OPTIONAL_MODULES],
                             capture_output=True, text=True, check=True).stdout.split()
    folder.mkdir()
    for module in missing:
        (folder / f"{module}.py").write_text(STUB)
    return str(folder)


@pytest.mark.parametrize("name", sorted(CASES))
def test_help_checks_and_the_gpu_line_on_the_real_checkout(name, tmp_path):
    checkout = os.environ.get(f"{name}_DIR")
    if not checkout:
        pytest.skip(f"set {name}_DIR to a checkout")
    _, base, weights_flag = CASES[name]
    stubs = stub_missing_modules(name, tmp_path / "stubs") if name == "WAN22" else None
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    help_ = run(name, "--help", cwd=checkout, stubs=stubs)
    assert help_.returncode == 0 and "--cache" in help_.stdout, help_.stderr[-2000:]

    bad = run(name, *base, weights_flag, str(tmp_path), "--thresh", "nan", cwd=checkout, stubs=stubs)
    errors = [line for line in bad.stderr.splitlines() if "error:" in line]
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert len(errors) == 1 and "--thresh must be a number >= 0, got nan" in errors[0], bad.stderr[-2000:]

    if name == "HUNYUAN":
        (tmp_path / "dit.pt").write_bytes(b"placeholder")
        base = [*base, "--dit-weight", str(tmp_path / "dit.pt"), "--save-path", str(tmp_path / "out")]
    no_gpu = run(name, *base, weights_flag, str(tmp_path), cwd=checkout, stubs=stubs)
    assert no_gpu.returncode == 1 and "Traceback" not in no_gpu.stderr, no_gpu.stderr[-2000:]
    assert "needs a CUDA GPU to run and none is visible" in no_gpu.stderr.strip().splitlines()[-1]
    assert sorted(os.listdir(tmp_path)) == (["dit.pt"] if name == "HUNYUAN" else [])
