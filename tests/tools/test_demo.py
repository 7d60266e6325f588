"""The README's main command and the benchmark, each in a quick mode, on the shipped tinywan weights."""

import json
import os
import subprocess
import sys

from easycache.policies import REGISTRY
from helpers import ROOT


def run(script, *args):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", script), *args], capture_output=True,
                            text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_demo_runs_end_to_end(tmp_path):
    out = run("demo.py", "--prompt", "a large red circle moves right on a plain background", "--steps", "8",
              "--ret_steps", "2", "--thresh", "0.2", "--out", str(tmp_path))
    assert "DiT calls" in out and "PSNR" in out and "wall clock" in out
    assert sorted(os.listdir(tmp_path)) == ["00_baseline.gif", "00_baseline.mp4", "00_easycache.gif",
                                            "00_easycache.mp4", "00_side_by_side.gif"]


def test_benchmark_runs_end_to_end(tmp_path):
    out = run("benchmark.py", "--quick", "--held_out", "2", "--tuning", "2", "--calibration_videos", "2", "--steps",
              "12", "--warmup", "2", "--wall_videos", "1", "--repeats", "1", "--out", str(tmp_path))
    assert "Held-out set (2 videos)" in out and "Knob guide" in out and "hits recomputed and bitwise equal" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["settings"]["held_out"]) == set(REGISTRY)  # every registered policy, none left out
    held_out, tuning = results["sets"]["held_out"], results["sets"]["tuning"]
    assert not {tuple(c) for c in held_out} & {tuple(c) for c in tuning}  # disjoint prompts and seeds
    assert not {c[1] for c in held_out} & {c[1] for c in tuning}
    for entries in results["settings"]["held_out"].values():
        for entry in entries:
            assert entry["speedup"] >= 1 and len(entry["psnr"]) == 2
    assert results["memo"]["checked"] >= 1
    assert (tmp_path / "results.md").exists()


def test_diffusers_demo_runs_end_to_end():
    out = run("demo_diffusers.py", "--seed", "0", "--steps", "10", "--ret_steps", "3", "--thresh", "0.2")
    assert "transformer calls" in out and "PSNR" in out and "wall clock" in out
    computed, total = out.split("transformer calls ")[1].split()[0].split("/")
    assert int(computed) < int(total) == 20


def test_demo_refuses_bad_numbers_in_one_line():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo_diffusers.py"), "--thresh", "nan"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].endswith(
        "error: --thresh must be a number >= 0, got nan")
