"""Opt-in: our script against a real Wan2.1 checkout (CPU, tiny random-weight WanModel).

    WAN21_DIR=/path/to/Wan2.1 [WAN21_PYTHON=/path/to/python] ./test.sh -k upstream

WAN21_PYTHON is an interpreter with Wan2.1's requirements (diffusers, transformers, easydict,
ftfy, dashscope, ...); flash-attn and a GPU are not needed. Skipped when WAN21_DIR is unset.
"""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT

WAN21_DIR = os.environ.get("WAN21_DIR")
pytestmark = pytest.mark.skipif(not WAN21_DIR, reason="set WAN21_DIR to a Wan2.1 checkout")
CHECKS = os.path.join(ROOT, "tests", "upstream", "wan21_checks.py")


def run_check(*args):
    python = os.environ.get("WAN21_PYTHON", sys.executable)
    result = subprocess.run([python, CHECKS, WAN21_DIR, *args], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_standin_cli_mirrors_the_real_generate_py(wan21_script, wan21_generate):
    real = json.loads(run_check("parser_spec").strip().splitlines()[-1])
    parser = wan21_script.upstream_parser(wan21_generate)
    ours = {a.dest: [repr(a.default), list(a.choices) if a.choices else None] for a in parser._actions}
    assert ours == real


def test_parse_args_on_the_real_generate_py():
    run_check("parse_args")


def test_real_t2v_pipeline_both_solvers():
    out = run_check("t2v")
    assert "unipc computed" in out and "dpm++ computed" in out


def test_real_t2v_pipeline_teacache():
    out = run_check("teacache")
    assert "teacache e computed" in out and "teacache ret computed" in out


def test_real_t2v_pipeline_deltacache():
    assert "deltacache blocks run" in run_check("deltacache")


def test_real_t2v_pipeline_calibration_and_magcache():
    assert "magcache computed" in run_check("magcache")


def test_real_pipeline_every_registered_policy():
    out = run_check("registry")
    assert "registry uniform unipc computed" in out and "registry easycache dpm++ computed" in out


def test_real_i2v_pipeline():
    assert "i2v computed" in run_check("i2v")


def test_real_generate_and_saver_through_the_cli_run(tmp_path):
    assert "cli ok" in run_check("cli_run", str(tmp_path))
