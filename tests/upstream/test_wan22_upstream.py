"""Opt-in: our Wan2.2 script against a real Wan2.2 checkout (CPU, tiny random-weight WanModels:
two experts for the A14B tasks, one 48-channel DiT for TI2V-5B).

    WAN22_DIR=/path/to/Wan2.2 [WAN22_PYTHON=/path/to/python] ./test.sh -k upstream

WAN22_PYTHON is an interpreter with Wan2.2's requirements (diffusers, transformers, easydict,
ftfy, imageio, ...); flash-attn, a GPU and the s2v/animate extras (decord, librosa, peft) are
not needed. Skipped when WAN22_DIR is unset.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT

WAN22_DIR = os.environ.get("WAN22_DIR")
pytestmark = pytest.mark.skipif(not WAN22_DIR, reason="set WAN22_DIR to a Wan2.2 checkout")
CHECKS = os.path.join(ROOT, "tests", "upstream", "wan22_checks.py")
STANDIN = os.path.join(ROOT, "tests", "standins", "wan22")


def run_check(*args, python=None, checkout=None):
    python = python or os.environ.get("WAN22_PYTHON", sys.executable)
    result = subprocess.run([python, CHECKS, checkout or WAN22_DIR, *args], capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def computed(out, prefix):
    """{expert: (computed, total)} from a line ``<prefix> ... high computed a/b low computed c/d``."""
    line = next(line for line in out.splitlines() if line.startswith(prefix))
    return {name: (int(a), int(b)) for name, a, b in re.findall(r"(high|low) computed (\d+)/(\d+)", line)}


@pytest.mark.skipif(not os.path.isdir(STANDIN), reason="no stand-in Wan2.2 checkout in tests/standins/wan22")
def test_standin_cli_mirrors_the_real_generate_py():
    real = json.loads(run_check("parser_spec").strip().splitlines()[-1])
    # the stand-in's generate.py through the script's upstream_parser, in a process of its own
    # (its generate/wan modules have the real ones' names)
    ours = json.loads(run_check("parser_spec", python=sys.executable, checkout=STANDIN).strip().splitlines()[-1])
    assert ours == real


def test_parse_args_on_the_real_generate_py():
    out = run_check("parse_args")
    assert "parse_args ok" in out and out.count("exit 2:") == 5


def test_expert_split_from_the_real_schedulers_and_loops():
    out = run_check("split")
    assert "split ok" in out
    for task, solver, high, low in (("t2v-A14B", "unipc", 7, 3), ("t2v-A14B", "dpm++", 7, 3),
                                    ("i2v-A14B", "unipc", 4, 6), ("i2v-A14B", "dpm++", 4, 6)):
        assert f"split {task} {solver} high {high} low {low} steps; calls in order" in out


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_real_a14b_pipeline_one_cache_per_expert(task):
    out = run_check(task)
    for solver in ("unipc", "dpm++"):
        experts = computed(out, f"{task} {solver} ")
        assert set(experts) == {"high", "low"}, out
        assert all(done < total for done, total in experts.values()), experts


def test_real_ti2v_pipeline_per_token_timesteps():
    out = run_check("ti2v")
    for label in ("ti2v unipc", "ti2v dpm++", "ti2v image unipc", "ti2v image dpm++"):
        assert f"{label} 20 steps computed" in out, out


def test_real_pipelines_at_the_default_settings():
    out = run_check("defaults")
    for task in ("t2v", "i2v"):
        assert set(computed(out, f"defaults {task} ")) == {"high", "low"}, out
    assert "defaults ti2v 50 steps thresh 0.05 computed" in out


def test_real_t2v_a14b_pipeline_every_registered_policy():
    out = run_check("registry")
    for solver in ("unipc", "dpm++"):
        for name in ("easycache", "uniform"):
            assert f"registry {name} {solver} computed" in out, out
        for name in ("deltacache", "magcache", "teacache"):
            assert f"registry {name} {solver} blocks run" in out, out


def test_real_t2v_a14b_calibration_per_expert_and_magcache():
    assert "calibrate magcache blocks run" in run_check("calibrate")


def test_real_generate_and_saver_through_the_cli_run(tmp_path):
    out = run_check("cli_run", str(tmp_path))
    assert "cli ok" in out and "cli t2v-A14B computed" in out and "cli ti2v-5B computed" in out


def test_real_generate_calibrate_then_magcache_through_the_cli_run(tmp_path):
    assert "cli calibrate magcache blocks run" in run_check("cli_calibrate", str(tmp_path))
