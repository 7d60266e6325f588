"""hunyuanvideo/hyvideo_svg_easycache.py: the sparse-attention geometry derived from the requested
video, SVG's sampling masks built row-wise, the errors when SVG is missing, and a run through a
minimal stand-in of SVG's HunyuanVideo package (written into a temporary directory)."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import HUNYUAN_STANDIN as HY_STANDIN
from helpers import SVG_SCRIPT as SCRIPT
from helpers import load_script


@pytest.fixture(scope="module")
def svg_script():
    return load_script(SCRIPT, "hyvideo_svg_easycache")


def test_geometry_720p(svg_script):
    g = svg_script.derive_geometry(720, 1280, 129)
    # 256 text tokens; (129 - 1) / 4 + 1 = 33 latent frames; (720 / 16) * (1280 / 16) = 45 * 80 = 3600
    assert (g.context_length, g.num_frame, g.frame_size) == (256, 33, 3600)
    assert g.seq_len == 256 + 33 * 3600 == 119056
    assert g.band_blocks == 42  # floor(1.5 * 3600 / 128) = floor(42.19)
    # sparsity 0.2: band fraction 0.2 - 2 * 256 / 119056 = 0.1956995;
    # width 119056 * (1 - sqrt(0.8043005)) / 3600 = 3.41201 frames
    assert svg_script.sparsity_to_width(0.2, g) == pytest.approx(3.41201, abs=1e-5)


def test_geometry_544p(svg_script):
    g = svg_script.derive_geometry(544, 960, 129)
    # (544 / 16) * (960 / 16) = 34 * 60 = 2040 tokens per frame
    assert (g.context_length, g.num_frame, g.frame_size) == (256, 33, 2040)
    assert g.seq_len == 256 + 33 * 2040 == 67576
    assert g.band_blocks == 23  # floor(1.5 * 2040 / 128) = floor(23.9)
    # band fraction 0.2 - 2 * 256 / 67576 = 0.1924233; width 67576 * (1 - sqrt(0.8075767)) / 2040 = 3.35718
    assert svg_script.sparsity_to_width(0.2, g) == pytest.approx(3.35718, abs=1e-5)


def test_geometry_follows_length_and_text_len(svg_script):
    g = svg_script.derive_geometry(544, 960, 65, text_len=128)
    assert (g.context_length, g.num_frame, g.frame_size) == (128, 17, 2040)
    assert svg_script.derive_geometry(720, 1280, 1).num_frame == 1


def test_sparsity_outside_the_band_budget_is_refused(svg_script):
    g = svg_script.derive_geometry(720, 1280, 129)
    for bad in (0.004, 1.5):
        with pytest.raises(ValueError, match="leaves no band"):
            svg_script.sparsity_to_width(bad, g)


def naive_masks(context, frames, per_frame, rows):
    """SVG's construction: full L x L masks from 128-token blocks, then the first rows."""
    video, seq = frames * per_frame, context + frames * per_frame
    pixel = torch.zeros(video, video, dtype=torch.bool)
    blocks, width = math.ceil(video / 128), per_frame * 1.5 // 128
    for i in range(blocks):
        for j in range(blocks):
            if abs(i - j) < width:
                pixel[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = True
    masks = []
    for pattern in (pixel, pixel.reshape(per_frame, frames, per_frame, frames).permute(1, 0, 3, 2)
                    .reshape(video, video)):
        full = torch.zeros(seq, seq, dtype=torch.bool)
        full[:video, :video] = pattern
        full[video:, :] = True
        full[:, video:] = True
        masks.append(full[:rows])
    return masks


@pytest.mark.parametrize("context,frames,per_frame,rows", [(8, 3, 200, 400), (16, 4, 100, 10000)])
def test_sampling_masks_match_svgs_full_construction(svg_script, context, frames, per_frame, rows):
    geometry = svg_script.SparseGeometry(context, frames, per_frame)
    ours = svg_script.sampling_masks(geometry, rows)
    expected = naive_masks(context, frames, per_frame, rows)
    assert [m.shape for m in ours] == [(min(rows, geometry.seq_len), geometry.seq_len)] * 2
    assert all(torch.equal(a, b) for a, b in zip(ours, expected))
    assert not torch.equal(ours[0], ours[1])


def run_script(args, cwd, script=SCRIPT):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    return subprocess.run([sys.executable, script, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)


def test_missing_svg_is_one_line_naming_what_to_install(tmp_path):
    result = run_script(["--help"], cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("hyvideo_svg_easycache.py: error: Sparse VideoGen is not installed (no module named "
                               "'svg'); install Sparse VideoGen as its README says "
                               "(https://github.com/svg-project/Sparse-VideoGen")


def write_package(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_missing_svg_dependency_is_named(tmp_path):
    write_package(tmp_path, {
        "svg/__init__.py": "", "svg/models/__init__.py": "", "svg/models/hyvideo/__init__.py": "",
        "svg/models/hyvideo/config.py": "import flash_attn_not_here\n"})
    result = run_script(["--help"], cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs 'flash_attn_not_here', which is not installed" in lines[0]


# A minimal SVG 1 layout over the stand-in HunyuanVideo: SVG's parser (HunyuanVideo's plus the
# sparsity flags), a sampler with get_prompt_mask, and an attention class that records what the
# script installs.
SVG_STANDIN = {
    "svg/__init__.py": "", "svg/models/__init__.py": "", "svg/models/hyvideo/__init__.py": "",
    "svg/models/hyvideo/utils/__init__.py": "", "svg/models/hyvideo/modules/__init__.py": "",
    "svg/models/hyvideo/config.py": """
        import argparse
        from hyvideo import config as base
        from hyvideo.config import sanity_check_args

        def parse_args(namespace=None):
            parser = argparse.ArgumentParser(description="HunyuanVideo inference script")
            for add in (base.add_network_args, base.add_extra_models_args, base.add_denoise_schedule_args,
                        base.add_inference_args, base.add_parallel_args):
                parser = add(parser)
            group = parser.add_argument_group(title="Sparsity")
            group.add_argument("--output_path", type=str, required=True)
            group.add_argument("--first_layers_fp", type=float, default=0.0)
            group.add_argument("--first_times_fp", type=float, default=0.0)
            group.add_argument("--record_attention", action="store_true")
            group.add_argument("--pattern", type=str, required=True, choices=["dense", "SVG"])
            group.add_argument("--num_sampled_rows", type=int, default=32)
            group.add_argument("--sample_mse_max_row", type=int, default=10000)
            parser.add_argument("--sparsity", type=float, default=1.0)
            return sanity_check_args(parser.parse_args(namespace=namespace))
        """,
    "svg/models/hyvideo/inference.py": """
        import torch
        from hyvideo import inference as base
        xfuser = base.xfuser
        RUNS_ON_CPU = True  # a stand-in

        class HunyuanVideoSampler(base.HunyuanVideoSampler):
            def get_prompt_mask(self, prompt, **kwargs):
                return self.text_encoder.encode([prompt])[1][0]
        """,
    "svg/models/hyvideo/utils/file_utils.py": "from hyvideo.utils.file_utils import save_videos_grid\n",
    "svg/models/hyvideo/modules/attenion.py": """
        class Hunyuan_SparseAttn:
            context_length, num_frame, frame_size = 256, 33, 3600
            attention_masks = None

        def prepare_flexattention(*args, **kwargs):
            return {"args": [a if isinstance(a, (int, float)) else str(a) for a in args], **kwargs}
        """,
    "svg/models/hyvideo/modules/custom_models.py": """
        replaced = []
        def replace_sparse_forward():
            replaced.append(True)
        """,
}


def test_svg_run_installs_the_derived_geometry_and_caches(tmp_path):
    write_package(tmp_path, SVG_STANDIN)
    (tmp_path / "dit.pt").write_bytes(b"stand-in")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=HY_STANDIN)
    video = tmp_path / "out" / "svg.mp4"
    video.parent.mkdir()
    argv = ["--video-size", "160", "160", "--video-length", "5", "--infer-steps", "12", "--seed", "0",
            "--flow-reverse", "--prompt", "a cat walks", "--text-len", "16", "--model-base", str(tmp_path), "--dit-weight",
            str(tmp_path / "dit.pt"), "--output_path", str(video), "--pattern", "SVG", "--sparsity", "0.6",
            "--num_sampled_rows", "64", "--first_times_fp", "0.055", "--first_layers_fp", "0.025",
            "--record_attention", "--thresh", "0.3", "--ret-steps", "3"]
    result = subprocess.run([sys.executable, SCRIPT, *argv], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(video.with_suffix(".report.json").read_text())
    svg = report["svg"]
    # 160 / 16 = 10 -> 100 tokens per frame; (5 - 1) / 4 + 1 = 2 frames; 16 + 200 = 216 tokens
    assert (svg["context_length"], svg["num_frame"], svg["frame_size"], svg["seq_len"]) == (16, 2, 100, 216)
    assert svg["sample_mse_max_row"] == 216 and svg["prompt_length"] == 5 and svg["package"] == "svg.models.hyvideo"
    assert 0 < report["dit_calls_computed"] < report["dit_calls_total"] == 12
    assert video.stat().st_size > 0 and "with SVG (sparsity 0.6)" in result.stdout

    again = subprocess.run([sys.executable, SCRIPT, *argv], cwd=tmp_path, capture_output=True, text=True, env=env,
                           timeout=120)
    assert again.returncode == 2 and again.stderr.strip().endswith("exists; pass --overwrite to replace it")


@pytest.fixture(scope="module")
def svg_standin(tmp_path_factory):
    """The stand-in SVG package imported in this process."""
    root = tmp_path_factory.mktemp("svg_checkout")
    write_package(root, SVG_STANDIN)
    (root / "dit.pt").write_bytes(b"stand-in")
    for path in (str(root), HY_STANDIN):
        if path not in sys.path:
            sys.path.insert(0, path)
    return root


@pytest.mark.parametrize("extra,expected", [
    (["--video-size", "64", "64"], "too few for SVG's 128-token blocks"),
    (["--sparsity", "0.001"], "leaves no band"),
    (["--text-len", "256"], "leaves no band beyond the text rows and columns (needs 1.1228 < sparsity <= 1)"),
    (["--first_times_fp", "2"], "--first_times_fp must be between 0 and 1"),
    (["--num_sampled_rows", "0"], "--num_sampled_rows must be >= 1"),
    (["--thresh", "-1"], "--thresh must be a number >= 0"),
    (["--video-size", "540", "960"], "multiple of 16"),
    (["--ulysses-degree", "2"], "launch with torchrun"),
])
def test_svg_bad_input_is_one_line_before_loading(svg_script, svg_standin, capsys, monkeypatch, extra, expected):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    svg = svg_script.SVG("svg.models.hyvideo")
    argv = ["--video-size", "160", "160", "--video-length", "5", "--infer-steps", "12", "--prompt", "a cat",
            "--text-len", "16", "--model-base", str(svg_standin), "--dit-weight", str(svg_standin / "dit.pt"),
            "--output_path", str(svg_standin / "v.mp4"), "--pattern", "SVG", "--sparsity", "0.6", *extra]
    with pytest.raises(SystemExit) as exit_:
        svg_script.parse_args(svg, argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and expected in lines[0], lines


def test_svg_pattern_refused_under_sequence_parallel(svg_script, svg_standin, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["--video-size", "160", "160", "--video-length", "5", "--prompt", "a cat", "--text-len", "16",
            "--model-base", str(svg_standin), "--dit-weight", str(svg_standin / "dit.pt"), "--output_path",
            str(svg_standin / "v.mp4"), "--pattern", "SVG", "--sparsity", "0.6", "--ulysses-degree", "2"]
    with pytest.raises(SystemExit):
        svg_script.parse_args(svg_script.SVG("svg.models.hyvideo"), argv)
    assert "--pattern SVG runs on one GPU" in capsys.readouterr().err
    args = svg_script.parse_args(svg_script.SVG("svg.models.hyvideo"), [a if a != "SVG" else "dense" for a in argv])
    assert args.pattern == "dense" and (args.thresh, args.ret_steps) == (0.025, 5)


def test_svg_offers_the_whole_model_policies_only(svg_script, svg_standin, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["--video-size", "160", "160", "--video-length", "5", "--prompt", "a cat", "--text-len", "16",
            "--model-base", str(svg_standin), "--dit-weight", str(svg_standin / "dit.pt"), "--output_path",
            str(svg_standin / "v.mp4"), "--pattern", "dense"]
    args = svg_script.parse_args(svg_script.SVG("svg.models.hyvideo"), [*argv, "--cache", "uniform"])
    assert args.cache_plan.spec.name == "uniform" and args.cache_plan.parts[None]["warmup_steps"] == 5
    with pytest.raises(SystemExit):
        svg_script.parse_args(svg_script.SVG("svg.models.hyvideo"), [*argv, "--cache", "teacache"])
    assert "invalid choice: 'teacache'" in capsys.readouterr().err
