"""The README's main command, in a quick mode."""

import os
import subprocess
import sys

from conftest import ROOT


def test_demo_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--steps", "10", "--frame_num", "5",
         "--ret_steps", "3", "--out_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "baseline             DiT calls  20/20" in result.stdout
    assert "fidelity of the mp4s: PSNR" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["baseline.mp4", "baseline.report.json", "easycache.mp4",
                                            "easycache.report.json"]
