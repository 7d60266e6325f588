"""tools/benchmark_diffusers.py on a small random-weight WanTransformer3DModel (2 blocks): the quick
mode end to end (3 held-out videos, so a partial write happens too) with two of our policies and a
diffusers-native cache, a diffusers cache at its
"off" setting reproducing the uncached frames bitwise, the work count agreeing with our own
report, and bad input as one error line before any work."""

import json
import os
import sys

import pytest
import torch

from tinywan import diffusers_bed as bed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import benchmark_diffusers as bd  # noqa: E402

SMALL = bed.transformer_config(heads=2, head_dim=16, ffn=64, layers=2)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-weight transformer of the bed's layout, saved as the benchmark loads it."""
    folder = tmp_path_factory.mktemp("weights")
    bed.build_transformer(SMALL, seed=3, adaln_zero=False).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def bench(weights):
    torch.set_num_threads(1)
    return bd.Bench(bed.load(weights), steps=6, guidance=5.0)


def cli(capsys, *args):
    """The command in this process (its imports are loaded already): exit code, stdout, stderr."""
    try:
        bd.main(list(args))
        code = 0
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_quick_mode_runs_end_to_end_with_ours_and_a_diffusers_cache(weights, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = cli(capsys, "--weights", weights, "--quick", "--held_out", "3", "--methods",
                               "easycache,diffusers-fbc,uniform", "--out", str(out))
    assert code == 0, stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert set(result["settings"]) == {"easycache", "diffusers-fbc", "uniform"}
    for rows in result["settings"].values():
        assert len(rows) == 2 and all(len(r["psnr"]) == 3 and len(r["work"]) == 3 for r in rows)
        assert all(0 < w <= 1 for r in rows for w in r["work"])
    uniform = {r["value"]: r for r in result["settings"]["uniform"]}
    assert uniform[3]["ideal_speedup"] > uniform[2]["ideal_speedup"] > 1  # skips are counted
    text = (out / "results.md").read_text()
    assert "| easycache |" in text and "| diffusers-fbc |" in text
    assert "diffusers-fbc (threshold" in text and "LPIPS" in text
    assert (out / "pareto.png").stat().st_size > 0
    assert "[3/3]" in stderr and "| easycache |" in stdout  # progress on stderr, the table on stdout
    assert "PARTIAL" not in text and "transformation rate k per step" in text  # the partial write was replaced


def case(i=0):
    return bd.Case("a large red circle moves right on a plain background", seed=i)


@pytest.mark.parametrize("name", ["diffusers-fbc", "diffusers-seacache", "easycache"])
def test_a_cache_at_its_off_setting_reproduces_the_uncached_frames_bitwise(bench, name):
    """Threshold 0 makes each of these compute every block of every call; their hooks then pass the
    blocks' own outputs through untouched, so the frames are bitwise the uncached ones."""
    method = bd.REGISTRY[name]
    base = bench.generate(case())
    result = bd.Result("off", name, method.off, {})
    bd.run_setting(bench, method, method.off, {}, case(), base, result)
    disable = method.enable(bench, method.off, {})
    try:
        again = bench.generate(case())
    finally:
        disable()
    assert torch.equal(again.video, base.video)
    assert result.work == [1.0] and result.psnr == [bd.PSNR_CAP]
    assert not bench.transformer.is_cache_enabled  # disabled again


def test_the_work_count_matches_our_own_report_for_a_whole_model_policy(bench):
    from easycache.adapters.diffusers import enable_cache
    base = bench.generate(case(1))
    assert base.ffn_runs == 2 * bench.steps * len(bench.transformer.blocks)
    cache = enable_cache(bench.pipe, "uniform", every=2, warmup_steps=1)
    try:
        run = bench.generate(case(1))
        report = cache.report()
    finally:
        cache.disable()
    assert run.macs / base.macs == pytest.approx(1 / report["ideal_speedup"], rel=1e-12)
    assert 0.4 < run.macs / base.macs < 0.8


def test_a_block_cache_is_counted_by_the_blocks_it_runs(bench):
    """FBC at an eager threshold: the first block of every call runs, the others only on computed
    calls; the count sees exactly that."""
    method = bd.REGISTRY["diffusers-fbc"]
    base = bench.generate(case(2))
    disable = method.enable(bench, 10.0, {})
    try:
        run = bench.generate(case(2))
    finally:
        disable()
    calls, blocks = 2 * bench.steps, len(bench.transformer.blocks)
    computed = (run.ffn_runs - calls) // (blocks - 1)  # block 1 runs on every call
    assert run.ffn_runs == calls + computed * (blocks - 1) and computed < calls
    assert run.macs < base.macs


def test_diffusers_taylorseer_defaults_hook_no_module_of_wan(bench):
    """Why the benchmark names Wan's sub-layers for TaylorSeer: its default identifiers
    ('^blocks.*attn', full match) match no module name of WanTransformer3DModel (blocks.N.attn1)."""
    from diffusers import TaylorSeerCacheConfig
    bench.transformer.enable_cache(TaylorSeerCacheConfig())
    try:
        hooked = [name for name, m in bench.transformer.named_modules()
                  if getattr(m, "_diffusers_hook", None) is not None and m._diffusers_hook.get_hook("taylorseer_cache")]
    finally:
        bench.transformer.disable_cache()
    assert hooked == []


def test_select_chains_values_around_the_targets():
    probed = [(0.1, 1.5), (0.2, 1.8), (0.3, 2.1), (0.4, 2.4), (0.5, 2.7), (0.6, 3.0), (0.7, 3.3), (0.8, 3.6)]
    # from the fastest below 2.0/1.05 = 1.90 (1.8), each next the fastest within 1.35x, past 3.0*1.05 = 3.15
    assert bd.select(probed, (2.0, 2.5, 3.0)) == [0.2, 0.4, 0.6, 0.8]
    assert bd.select(probed[:3], (2.0, 2.5, 3.0)) == [0.2, 0.3]  # a method that stops short keeps its range
    assert bd.select(probed[:1], (2.0, 2.5, 3.0)) == [0.1]  # one that never gets there: its fastest


@pytest.mark.parametrize("args, message", [
    (["--held_out", "1"], "--held_out must be >= 2"),
    (["--tuning", "2", "--walk_videos", "3"], "--walk_videos must lie in 1..2"),
    (["--methods", "easycache,nope"], "--methods: unknown 'nope'"),
    (["--factor", "1"], "--factor must be a number > 1"),
    (["--weights", "/nonexistent"], "no config.json there"),
])
def test_bad_input_is_one_error_line_before_any_work(args, message, weights, tmp_path, capsys):
    if "--weights" not in args:
        args = ["--weights", weights, *args]
    code, stdout, stderr = cli(capsys, *args, "--out", str(tmp_path / "o"))
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("benchmark_diffusers.py: error: ") and message in lines[0]
    assert not (tmp_path / "o").exists()
