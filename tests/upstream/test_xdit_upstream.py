"""Opt-in: the cache under xDiT's real engine (xfuser 0.7.0, yunchang 0.6.4) in real Wan2.1 and
HunyuanVideo checkouts, two CPU processes over gloo, Ulysses 2 and ring 2 (tests/upstream/xdit_checks.py):
Wan2.1's own ``usp_dit_forward``/``usp_attn_forward`` and HunyuanVideo's own
``parallelize_transformer``, tiny random-weight DiTs.

    WAN21_DIR=/path/to/Wan2.1 WAN21_PYTHON=/path/to/python \\
    HUNYUAN_DIR=/path/to/HunyuanVideo HUNYUAN_PYTHON=/path/to/python ./test.sh tests/upstream/test_xdit_upstream.py

The interpreters need the checkout's requirements (see test_wan21_upstream.py, test_hunyuan_upstream.py)
plus ``pip install xfuser==0.7.0 yunchang==0.6.4``; no GPU, no flash-attn. Each test is skipped when
its checkout is unset.
"""

import os
import subprocess
import sys

import pytest

from helpers import ROOT

CHECKS = os.path.join(ROOT, "tests", "upstream", "xdit_checks.py")


def run_checks(model, checkout, python, tmp_path):
    result = subprocess.run([python or sys.executable, CHECKS, model, checkout], capture_output=True, text=True,
                            timeout=900, cwd=tmp_path,
                            env=dict(os.environ, OMP_NUM_THREADS="1", HY_TMP=str(tmp_path)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


@pytest.mark.skipif(not os.environ.get("WAN21_DIR"), reason="set WAN21_DIR to a Wan2.1 checkout")
def test_real_wan21_usp_forward_keeps_the_cache_on_and_the_ranks_in_step(tmp_path):
    out = run_checks("wan21", os.environ["WAN21_DIR"], os.environ.get("WAN21_PYTHON"), tmp_path)
    assert "wan21 ulysses2 ok" in out and "wan21 ring2 ok" in out, out


@pytest.mark.skipif(not os.environ.get("HUNYUAN_DIR"), reason="set HUNYUAN_DIR to a HunyuanVideo checkout")
def test_real_hunyuan_parallelize_transformer_keeps_the_cache_on_and_the_ranks_in_step(tmp_path):
    out = run_checks("hunyuan", os.environ["HUNYUAN_DIR"], os.environ.get("HUNYUAN_PYTHON"), tmp_path)
    assert "hunyuan ulysses2 ok" in out and "hunyuan ring2 ok" in out, out
