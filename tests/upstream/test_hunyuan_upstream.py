"""Opt-in: our HunyuanVideo script against a real HunyuanVideo checkout (CPU, tiny random-weight DiT).

    HUNYUAN_DIR=/path/to/HunyuanVideo [HUNYUAN_PYTHON=/path/to/python] ./test.sh -k hunyuan_upstream

HUNYUAN_PYTHON is an interpreter with HunyuanVideo's requirements (diffusers 0.31, transformers,
einops, loguru, imageio, torchvision, ...); flash-attn, xfuser and a GPU are not needed. Skipped
when HUNYUAN_DIR is unset.
"""

import json
import os
import subprocess
import sys

import pytest

from helpers import HUNYUAN_SCRIPT, HUNYUAN_STANDIN, ROOT, load_script

HUNYUAN_DIR = os.environ.get("HUNYUAN_DIR")
pytestmark = pytest.mark.skipif(not HUNYUAN_DIR, reason="set HUNYUAN_DIR to a HunyuanVideo checkout")
CHECKS = os.path.join(ROOT, "tests", "upstream", "hunyuan_checks.py")


def run_check(tmp_path, *args):
    python = os.environ.get("HUNYUAN_PYTHON", sys.executable)
    result = subprocess.run([python, CHECKS, HUNYUAN_DIR, *args], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1", HY_TMP=str(tmp_path)))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_standin_cli_mirrors_the_real_config(tmp_path):
    real = json.loads(run_check(tmp_path, "parser_spec").strip().splitlines()[-1])
    script = load_script(HUNYUAN_SCRIPT, "easycache_sample_video")
    if HUNYUAN_STANDIN not in sys.path:
        sys.path.insert(0, HUNYUAN_STANDIN)
    import hyvideo.config
    parser = script.upstream_parser(hyvideo.config.parse_args)
    ours = {a.dest: [repr(a.default), sorted(a.choices) if a.choices else None] for a in parser._actions}
    assert ours == real


def test_parse_args_on_the_real_config(tmp_path):
    assert "parse ok" in run_check(tmp_path, "parse_args")


def test_real_pipeline_cfg_one_and_batch_two(tmp_path):
    out = run_check(tmp_path, "pipeline")
    assert "cfg 1.0 computed" in out and "cfg 5.0 computed" in out


def test_real_dit_return_contract_on_reused_steps(tmp_path):
    assert "contract ok" in run_check(tmp_path, "contract")


def test_real_xdit_wrapper_keeps_the_cache_on(tmp_path):
    assert "xdit computed" in run_check(tmp_path, "xdit")


def test_real_sample_video_main_through_our_run(tmp_path):
    assert "cli ok" in run_check(tmp_path, "cli_run", str(tmp_path / "results"))


def test_real_pipeline_with_each_peer_method(tmp_path):
    out = run_check(tmp_path, "peers")
    for name in ("teacache", "magcache", "deltacache"):
        assert f"{name} cfg 1.0 computed" in out and f"{name} cfg 5.0 computed" in out


def test_real_pipeline_with_every_registered_policy(tmp_path):
    out = run_check(tmp_path, "registry")
    assert "registry uniform cfg 5.0 computed" in out and "registry teacache cfg 1.0 computed" in out


def test_real_xdit_wrapper_with_each_peer_method(tmp_path):
    out = run_check(tmp_path, "peers_xdit")
    assert all(f"xdit {name} blocks" in out for name in ("teacache", "magcache", "deltacache"))


def test_real_sample_video_main_with_calibration_and_each_peer(tmp_path):
    (tmp_path / "results").mkdir()
    assert "peers cli ok" in run_check(tmp_path, "peers_cli", str(tmp_path / "results"))
