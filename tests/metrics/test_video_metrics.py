"""Tests for tools/video_metrics.py (CPU only, no network, tiny synthetic videos).

Expected values come from analytic formulas or from independent numpy
computations written here, never from the module under test.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "video_metrics.py"


def _load_module():
    name = "video_metrics_under_test"
    spec = importlib.util.spec_from_file_location(name, TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


vm = _load_module()

T, H, W = 8, 32, 32


# --------------------------------------------------------------------------- #
# Synthetic data and helpers
# --------------------------------------------------------------------------- #


def smooth_video(t=T, h=H, w=W, seed=0, lo=20, hi=235):
    """Smooth moving pattern (codec friendly), values in [lo, hi]."""
    rng = np.random.default_rng(seed)
    ph = rng.uniform(0, 2 * np.pi, 3)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for k in range(t):
        chans = [
            np.sin(x / 6.0 + k / 3.0 + ph[0]),
            np.cos(y / 7.0 - k / 4.0 + ph[1]),
            np.sin((x + y) / 9.0 + k / 5.0 + ph[2]),
        ]
        frames.append(np.stack(chans, -1))
    v = np.stack(frames)
    v = lo + (hi - lo) * (v + 1) / 2
    return np.round(v).astype(np.uint8)


def write_mp4(path, frames, fps=16):
    import imageio.v2 as iio2

    iio2.mimwrite(str(path), frames, fps=fps, codec="libx264", quality=10, macro_block_size=1,
                  ffmpeg_log_level="error")
    return path


def write_frames(folder, frames):
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        iio.imwrite(folder / f"frame_{i}.png", f)  # natural sort needed: frame_10 after frame_9
    return folder


def np_ssim(a, b):
    """Independent SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1=0.01,
    K2=0.03, data range 1, reflect padding so the SSIM map has the image size, averaged
    over pixels and channels. a, b: float64 [H, W, 3] in [0, 1]."""
    r = 5
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / 1.5) ** 2)
    g /= g.sum()

    def blur(img):
        p = np.pad(img, ((r, r), (r, r), (0, 0)), mode="reflect")
        rows = sum(g[i] * p[i : i + img.shape[0], :, :] for i in range(2 * r + 1))
        return sum(g[j] * rows[:, j : j + img.shape[1], :] for j in range(2 * r + 1))

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    va = blur(a * a) - mu_a**2
    vb = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(s.mean())


def np_mse(a, b):
    d = a.astype(np.float64) / 255.0 - b.astype(np.float64) / 255.0
    return (d * d).mean(axis=(1, 2, 3))


def run_cli(args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          env=e, cwd=str(ROOT), timeout=120)


def stderr_lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


@pytest.fixture(scope="session")
def rand_alex(tmp_path_factory):
    """Randomly initialised AlexNet 'features' weights (test only: no download)."""
    import torchvision

    torch.manual_seed(0)
    feats = torchvision.models.alexnet(weights=None).features
    path = tmp_path_factory.mktemp("w") / "alex_random.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    return path


@pytest.fixture()
def empty_torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


# --------------------------------------------------------------------------- #
# PSNR
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("d", [1, 5, 20])
def test_psnr_constant_offset_is_analytic(d):
    orig = smooth_video()
    gen = orig + np.uint8(d)  # no overflow: values <= 235
    m = vm.compare_frames(orig, gen, lpips=False, device="cpu")
    expected = 20 * math.log10(255.0 / d)
    assert m.mse_pooled == pytest.approx((d / 255.0) ** 2, rel=1e-15)
    assert m.psnr_pooled == pytest.approx(expected, abs=1e-9)
    assert m.psnr_frame_mean == pytest.approx(expected, abs=1e-9)
    assert all(p == pytest.approx(expected, abs=1e-9) for p in m.psnr_per_frame)
    assert m.n_identical_frames == 0
    # float input in [0, 1] gives the same numbers up to float32 rounding
    mf = vm.compare_frames(torch.from_numpy(orig) / 255.0, torch.from_numpy(gen) / 255.0, lpips=False)
    assert mf.psnr_pooled == pytest.approx(expected, abs=1e-4)


def test_psnr_random_sign_noise_is_analytic():
    """gen = orig +/- s (random signs, no clipping) -> per-pixel squared error s^2 exactly."""
    orig = smooth_video(seed=1)
    rng = np.random.default_rng(3)
    s = np.array([2, 3, 4, 6, 8, 10, 12, 16])[:, None, None, None]
    gen = (orig.astype(int) + s * rng.choice([-1, 1], size=orig.shape)).astype(np.uint8)
    m = vm.compare_frames(orig, gen, lpips=False, chunk_frames=3)
    per_frame = (s.ravel() / 255.0) ** 2
    assert m.mse_per_frame == pytest.approx(per_frame, rel=1e-12)
    assert m.psnr_pooled == pytest.approx(-10 * math.log10(per_frame.mean()), abs=1e-9)
    assert m.psnr_frame_mean == pytest.approx(np.mean(20 * np.log10(255.0 / s.ravel())), abs=1e-9)
    # Pooled and per-frame-mean PSNR are different conventions (Jensen): pooled is lower here.
    assert m.psnr_pooled < m.psnr_frame_mean - 1.0


def test_psnr_gaussian_noise_matches_numpy():
    orig = smooth_video(seed=2)
    rng = np.random.default_rng(4)
    sigma = np.linspace(1, 12, T)[:, None, None, None]
    gen = np.clip(np.round(orig + rng.normal(size=orig.shape) * sigma), 0, 255).astype(np.uint8)
    mse = np_mse(orig, gen)
    m = vm.compare_frames(orig, gen, lpips=False)
    assert m.mse_per_frame == pytest.approx(mse, rel=1e-12)
    assert m.psnr_pooled == pytest.approx(-10 * np.log10(mse.mean()), abs=1e-9)
    assert m.psnr_frame_mean == pytest.approx(np.mean(-10 * np.log10(mse)), abs=1e-9)
    # noise level is known: MSE ~ sigma^2 / 255^2 (rounding adds ~1/12 LSB^2)
    assert mse == pytest.approx((sigma.ravel() ** 2 + 1 / 12) / 255**2, rel=0.15)


def test_identical_frames_give_inf_without_nan():
    orig = smooth_video(seed=5)
    gen = orig.copy()
    gen[2] = orig[2] + np.uint8(4)
    gen[5] = orig[5] + np.uint8(8)
    m = vm.compare_frames(orig, gen, lpips=False)
    assert m.n_identical_frames == T - 2
    assert sum(math.isinf(p) for p in m.psnr_per_frame) == T - 2
    assert m.psnr_frame_mean == pytest.approx((20 * math.log10(255 / 4) + 20 * math.log10(255 / 8)) / 2, abs=1e-9)
    assert math.isfinite(m.psnr_pooled)
    assert m.psnr_pooled == pytest.approx(-10 * math.log10((16 + 64) / 255**2 / T), abs=1e-9)

    same = vm.compare_frames(orig, orig.copy(), lpips=False)
    assert same.psnr_pooled == math.inf and same.psnr_frame_mean == math.inf
    assert same.n_identical_frames == T and same.mse_pooled == 0.0
    assert same.ssim_mean == pytest.approx(1.0, abs=1e-5)
    for v in [same.psnr_pooled, same.psnr_frame_mean, same.ssim_mean, *same.ssim_per_frame]:
        assert not math.isnan(v)


# --------------------------------------------------------------------------- #
# SSIM
# --------------------------------------------------------------------------- #


def test_ssim_matches_independent_reference():
    orig = smooth_video(seed=6)
    rng = np.random.default_rng(7)
    gen = np.clip(np.round(orig + rng.normal(0, 10, orig.shape)), 0, 255).astype(np.uint8)
    gen[3] = np.clip(orig[3].astype(int) + 30, 0, 255)  # brightness shift
    m = vm.compare_frames(orig, gen, lpips=False, chunk_frames=5)
    ref = [np_ssim(orig[i] / 255.0, gen[i] / 255.0) for i in range(T)]
    assert m.ssim_per_frame == pytest.approx(ref, abs=2e-4)
    assert m.ssim_mean == pytest.approx(np.mean(ref), abs=2e-4)
    assert all(s < 0.999 for s in m.ssim_per_frame)
    ident = vm.compare_frames(orig, orig, lpips=False)
    assert ident.ssim_per_frame == pytest.approx([1.0] * T, abs=1e-5)


def test_chunking_does_not_change_results():
    orig = smooth_video(seed=8)
    rng = np.random.default_rng(9)
    gen = np.clip(np.round(orig + rng.normal(0, 5, orig.shape)), 0, 255).astype(np.uint8)
    a = vm.compare_frames(orig, gen, lpips=False, chunk_frames=1)
    b = vm.compare_frames(orig, gen, lpips=False, chunk_frames=64)
    assert a.mse_per_frame == b.mse_per_frame
    assert a.psnr_pooled == b.psnr_pooled
    assert a.ssim_per_frame == pytest.approx(b.ssim_per_frame, abs=1e-6)


def test_layouts_value_ranges_and_streaming_accumulator():
    orig = smooth_video(seed=10)
    gen = orig + np.uint8(3)
    ref = vm.compare_frames(orig, gen, lpips=False)
    o = torch.from_numpy(orig).float() / 255
    g = torch.from_numpy(gen).float() / 255
    tchw = vm.compare_frames(o.permute(0, 3, 1, 2), g.permute(0, 3, 1, 2), layout="TCHW", lpips=False)
    cthw = vm.compare_frames(o.permute(3, 0, 1, 2) * 2 - 1, g.permute(3, 0, 1, 2) * 2 - 1,
                             layout="CTHW", value_range=(-1, 1), lpips=False)
    for m in (tchw, cthw):
        assert m.psnr_pooled == pytest.approx(ref.psnr_pooled, abs=1e-3)
        assert m.ssim_mean == pytest.approx(ref.ssim_mean, abs=1e-5)
    with pytest.raises(vm.VideoMetricsError, match="outside value_range"):
        vm.compare_frames(o * 255, g * 255, lpips=False)
    acc = vm.MetricsAccumulator(device="cpu")
    for s in range(0, T, 3):
        acc.update(orig[s : s + 3], gen[s : s + 3])
    res = acc.result()
    assert res.n_frames == T and res.psnr_pooled == ref.psnr_pooled


def test_api_mismatch_and_align():
    orig = smooth_video(seed=11)
    with pytest.raises(vm.VideoMetricsError, match="frame count mismatch"):
        vm.compare_frames(orig, orig[:6], lpips=False)
    m = vm.compare_frames(orig, orig[:6] + np.uint8(2), lpips=False, align="trim")
    assert m.n_frames == 6 and any("trim" in a for a in m.alignment)
    small = orig[:, ::2, ::2]
    with pytest.raises(vm.VideoMetricsError, match="resolution mismatch"):
        vm.compare_frames(orig, small, lpips=False)
    r = vm.compare_frames(orig, small, lpips=False, align="trim,resize")
    assert r.n_frames == T and any("resized from 16x16 to 32x32" in a for a in r.alignment)
    assert 15 < r.psnr_pooled < 60


# --------------------------------------------------------------------------- #
# LPIPS (random backbone saved to a temp file; no network)
# --------------------------------------------------------------------------- #


def test_lpips_zero_for_identical_positive_otherwise(rand_alex):
    orig = smooth_video(seed=12)
    rng = np.random.default_rng(13)
    gen = np.clip(np.round(orig + rng.normal(0, 12, orig.shape)), 0, 255).astype(np.uint8)
    same = vm.compare_frames(orig, orig.copy(), lpips=True, lpips_weights=rand_alex)
    assert same.lpips_per_frame is not None and max(same.lpips_per_frame) < 1e-7
    diff = vm.compare_frames(orig, gen, lpips=True, lpips_weights=rand_alex)
    assert min(diff.lpips_per_frame) > 0 and diff.lpips_mean == pytest.approx(np.mean(diff.lpips_per_frame))
    assert diff.lpips_net == "alex" and diff.lpips_weights == str(rand_alex)


def test_lpips_backbone_is_loaded_strictly(rand_alex, tmp_path):
    import lpips as lpips_pkg

    model = vm.load_lpips("alex", weights=rand_alex, device="cpu")
    saved = torch.load(rand_alex)
    net_sd = model.net.state_dict()
    assert len(net_sd) == len(saved) == 10
    for k, v in net_sd.items():  # "slice2.3.weight" <- "features.3.weight"
        assert torch.equal(v, saved["features." + k.split(".", 1)[1]])
    heads = torch.load(Path(lpips_pkg.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu")
    for k, v in heads.items():
        assert torch.equal(model.state_dict()[k], v)

    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in list(saved.items())[:4]}, partial)
    with pytest.raises(vm.LpipsUnavailable, match="lack 6 of 10"):
        vm.load_lpips("alex", weights=partial)
    wrong = tmp_path / "wrong.pth"
    torch.save({k: v[..., :1] if v.ndim == 4 else v for k, v in saved.items()}, wrong)
    with pytest.raises(vm.LpipsUnavailable, match="do not fit"):
        vm.load_lpips("alex", weights=wrong)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(vm.LpipsUnavailable, match="could not read"):
        vm.load_lpips("alex", weights=corrupt)


def test_lpips_vgg_key_mapping(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(1)
    feats = make_layers(cfgs["D"])  # VGG16 'features' only: no 100M-parameter classifier needed
    path = tmp_path / "vgg_random.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    model = vm.load_lpips("vgg", weights=path)
    n = 0
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, feats.state_dict()[k.split(".", 1)[1]])
        n += 1
    assert n == 26  # 13 conv layers x (weight, bias)


def test_lpips_missing_weights_is_reported_not_random(empty_torch_home):
    expected = empty_torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert vm.lpips_weights_path("alex") == expected
    orig = smooth_video(seed=14)
    with pytest.warns(RuntimeWarning, match="LPIPS unavailable"):
        m = vm.compare_frames(orig, orig + np.uint8(1), device="cpu")  # lpips="auto"
    assert m.lpips_mean is None and m.lpips_per_frame is None
    assert str(expected) in m.lpips_unavailable
    assert math.isfinite(m.psnr_pooled) and m.ssim_mean > 0.9
    with pytest.raises(vm.LpipsUnavailable, match="alexnet-owt-7be5be79.pth"):
        vm.compare_frames(orig, orig, lpips=True)


# --------------------------------------------------------------------------- #
# Real files: mp4 (libx264), gif, folders of PNG frames
# --------------------------------------------------------------------------- #


def test_mp4_round_trip_within_codec_tolerance(tmp_path):
    orig = smooth_video(t=T, h=64, w=64, seed=15)
    gen = orig + np.uint8(6)  # analytic: PSNR = 20*log10(255/6) = 32.57 dB
    a = write_mp4(tmp_path / "a.mp4", orig)
    b = write_mp4(tmp_path / "b.mp4", gen)
    decoded, fps = vm.read_video(a)
    assert decoded.shape == orig.shape and decoded.dtype == np.uint8 and fps == pytest.approx(16.0)
    assert -10 * np.log10(np_mse(decoded, orig).mean()) > 30  # yuv420p loses some chroma detail

    expected = 20 * math.log10(255 / 6)
    disk = vm.compare_videos(a, b, lpips=False, chunk_frames=3)
    mem = vm.compare_frames(orig, gen, lpips=False)
    assert disk.n_frames == T and disk.original.fps == 16.0
    assert disk.psnr_pooled == pytest.approx(expected, abs=0.5)
    assert disk.psnr_frame_mean == pytest.approx(expected, abs=0.5)
    assert disk.ssim_mean == pytest.approx(mem.ssim_mean, abs=0.01)

    self_cmp = vm.compare_videos(a, a, lpips=False)
    assert self_cmp.psnr_pooled == math.inf and self_cmp.n_identical_frames == T


def test_gif_and_png_folder_are_exact(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(17)
    palette = rng.integers(0, 256, (6, 3)).astype(np.uint8)
    frames = palette[rng.integers(0, 6, (12, 32, 32))]  # few colours: GIF is lossless
    gif = tmp_path / "v.gif"
    iio.imwrite(gif, frames, duration=60, loop=0)  # GIF stores centiseconds
    folder = write_frames(tmp_path / "frames", frames)
    g, gfps = vm.read_video(gif)
    f, ffps = vm.read_video(folder)
    assert np.array_equal(g, frames) and np.array_equal(f, frames)  # frame_10 sorted after frame_9
    assert ffps is None and gfps == pytest.approx(1000 / 60)
    chunks = list(vm.iter_video(folder, chunk_frames=5))
    assert [len(c) for c in chunks] == [5, 5, 2]
    m = vm.compare_videos(gif, folder, lpips=False)
    assert m.psnr_pooled == math.inf and any("fps not checked" in a for a in m.alignment)


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    base = smooth_video(seed=20)
    rng = np.random.default_rng(21)
    noisy = np.clip(np.round(base + rng.normal(0, 5, base.shape)), 0, 255).astype(np.uint8)
    files = {
        "a": write_mp4(d / "a.mp4", base),
        "b": write_mp4(d / "b.mp4", noisy),
        "short": write_mp4(d / "short.mp4", noisy[:6]),
        "big": write_mp4(d / "big.mp4", smooth_video(h=48, w=64, seed=20)),
        "fps24": write_mp4(d / "fps24.mp4", noisy, fps=24),
        "missing": d / "missing.mp4",
        "empty": d / "empty.mp4",
        "corrupt": d / "corrupt.mp4",
        "truncated": d / "truncated.mp4",
        "badgif": d / "bad.gif",
        "noframes": d / "noframes",
        "badpng": d / "badpng",
        "mixed": d / "mixed_sizes",
        "vids": d / "vids",
    }
    files["empty"].write_bytes(b"")
    files["corrupt"].write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    files["truncated"].write_bytes(files["b"].read_bytes()[: files["b"].stat().st_size // 2])
    files["badgif"].write_bytes(b"GIF89a" + b"\x00" * 20)
    files["noframes"].mkdir()
    (files["noframes"] / "notes.txt").write_text("x")
    write_frames(files["badpng"], base)
    (files["badpng"] / "frame_1.png").write_bytes(b"\x89PNG garbage")
    write_frames(files["mixed"], base)
    import imageio.v3 as iio

    iio.imwrite(files["mixed"] / "frame_3.png", smooth_video(t=1, h=16, w=16)[0])  # odd size
    files["vids"].mkdir()
    (files["vids"] / "a.mp4").write_bytes(files["a"].read_bytes())
    return files


ERROR_CASES = {
    # name: (original, generated, extra args, substrings expected in the single error line)
    "frame_count": ("a", "short", [], ["frame count mismatch", "has 8 frames", "has 6", "--align trim"]),
    "resolution": ("a", "big", [], ["resolution mismatch", "32x32", "64x48", "--align resize"]),
    "fps": ("a", "fps24", [], ["fps mismatch", "16 fps", "24 fps"]),
    "all_three": ("a", "big", ["--align", "trim"], ["resolution mismatch"]),
    "missing": ("a", "missing", [], ["missing.mp4", "does not exist"]),
    "empty": ("empty", "a", [], ["empty.mp4", "empty (0 bytes)"]),
    "corrupt": ("a", "corrupt", [], ["corrupt.mp4", "could not be read", "Invalid data"]),
    "truncated": ("a", "truncated", [], ["truncated.mp4", "could not be read"]),
    "bad_gif": ("badgif", "a", [], ["bad.gif", "could not be read as a GIF"]),
    "no_frames": ("noframes", "a", [], ["noframes", "without image frames"]),
    "bad_png": ("badpng", "a", [], ["frame_1.png", "could not be read"]),
    "bad_align": ("a", "b", ["--align", "stretch"], ["unknown --align value"]),
    "mixed_sizes": ("mixed", "a", [], ["frame_3.png", "is 16x16", "the first frame is 32x32"]),
    "folder_vs_file": ("vids", "a", [], ["cannot compare", "folder of videos"]),
    "bad_device": ("a", "b", ["--device", "cuda:99"], ["--device cuda:99"]),
}


def test_cli_errors_are_one_line(cli_files, tmp_path):
    """Every bad input: exactly one stderr line naming the problem, exit 2, no traceback.
    The subprocesses run in parallel to keep the test fast."""
    env = dict(os.environ, TORCH_HOME=str(tmp_path / "th"))
    procs = {}
    for name, (o, g, extra, _) in ERROR_CASES.items():
        cmd = [sys.executable, str(TOOL), "--original_video", str(cli_files[o]),
               "--generated_video", str(cli_files[g]), "--no_progress", *extra]
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       env=env, cwd=str(ROOT))
    # Importing the module pulls in none of the heavy dependencies.
    code = ("import sys; sys.path.insert(0, 'tools'); import video_metrics; "
            "print(sorted(m for m in ('torch', 'lpips', 'torchmetrics', 'matplotlib') if m in sys.modules))")
    imp = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=str(ROOT))
    failures = []
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        lines = stderr_lines(err)
        expected = ERROR_CASES[name][3]
        ok = (p.returncode == 2 and len(lines) == 1 and lines[0].startswith("video_metrics: error: ")
              and all(s in lines[0] for s in expected) and "Traceback" not in err)
        if not ok:
            failures.append(f"{name}: rc={p.returncode} stderr={err!r}")
    out, err = imp.communicate(timeout=60)
    assert imp.returncode == 0 and out.strip() == "[]", err
    assert not failures, "\n".join(failures)


def test_cli_missing_lpips_weights_still_reports_psnr_ssim(cli_files, tmp_path):
    env = {"TORCH_HOME": str(tmp_path / "th")}
    r = run_cli(["--original_video", cli_files["a"], "--generated_video", cli_files["b"],
                 "--json", tmp_path / "m.json"], env=env)
    assert r.returncode == 0, r.stderr
    lines = stderr_lines(r.stderr)
    want = tmp_path / "th" / "hub" / "checkpoints"
    assert len(lines) == 1 and lines[0].startswith("video_metrics: warning: LPIPS unavailable")
    assert "alexnet-owt-7be5be79.pth" in lines[0] and str(want) in lines[0]
    assert "PSNR  [dB] from MSE pooled over the video" in r.stdout and "SSIM" in r.stdout and "unavailable" in r.stdout
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["summary"]["lpips_mean"] is None and doc["lpips"]["unavailable"]
    assert doc["summary"]["psnr_pooled"] > 20 and doc["summary"]["ssim_mean"] > 0.5


def _strict_json(path):
    def bad(c):
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(Path(path).read_text(), parse_constant=bad)


def test_cli_align_and_outputs(cli_files, tmp_path, rand_alex, capsys):
    out = tmp_path / "out"
    rc = vm.main(["--original_video", str(cli_files["a"]), "--generated_video", str(cli_files["short"]),
                  "--align", "trim", "--lpips_weights", str(rand_alex), "--no_progress", "--per_frame",
                  "--json", str(out / "m.json"), "--csv", str(out / "m.csv")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "trim: compared the first 6 frames (original has 8, generated has 6)" in cap.out
    assert cap.err == ""
    doc = _strict_json(out / "m.json")
    assert doc["summary"]["n_frames"] == 6 and len(doc["per_frame"]["psnr"]) == 6
    assert len(doc["per_frame"]["lpips"]) == 6 and doc["summary"]["lpips_mean"] > 0
    rows = (out / "m.csv").read_text().splitlines()
    assert rows[0].startswith("kind,video,frame,mse,psnr")
    assert sum(r.startswith("frame,") for r in rows) == 6 and sum(r.startswith("video,") for r in rows) == 1
    assert sorted(os.listdir(out)) == ["m.csv", "m.json"]  # no temp files left behind

    rc = vm.main(["--original_video", str(cli_files["a"]), "--generated_video", str(cli_files["big"]),
                  "--align", "resize", "--no_lpips", "--no_progress"])
    cap = capsys.readouterr()
    assert rc == 0 and "resize: generated frames resized from 64x48 to 32x32" in cap.out

    rc = vm.main(["--original_video", str(cli_files["a"]), "--generated_video", str(cli_files["fps24"]),
                  "--ignore_fps", "--no_lpips", "--no_progress"])
    cap = capsys.readouterr()
    assert rc == 0 and "fps differ (16 vs 24), ignored" in cap.out


def test_cli_identical_videos_json_null_and_csv_inf(cli_files, tmp_path, capsys):
    rc = vm.main(["--original_video", str(cli_files["a"]), "--generated_video", str(cli_files["a"]),
                  "--no_lpips", "--no_progress", "--json", str(tmp_path / "m.json"), "--csv", str(tmp_path / "m.csv")])
    cap = capsys.readouterr()
    assert rc == 0
    assert "inf  (all frames identical)" in cap.out and "nan" not in cap.out.lower()
    doc = _strict_json(tmp_path / "m.json")
    assert doc["summary"]["psnr_pooled"] is None and doc["summary"]["mse_pooled"] == 0
    assert doc["summary"]["n_identical_frames"] == T and all(p is None for p in doc["per_frame"]["psnr"])
    video_row = [r for r in (tmp_path / "m.csv").read_text().splitlines() if r.startswith("video,")][0]
    assert video_row.split(",")[4] == "inf"


def test_cli_folder_mode(cli_files, tmp_path, capsys):
    import shutil

    od, gd = tmp_path / "orig", tmp_path / "gen"
    od.mkdir(), gd.mkdir()
    shutil.copy(cli_files["a"], od / "cat.mp4")
    shutil.copy(cli_files["b"], gd / "cat.mp4")
    shutil.copy(cli_files["a"], od / "dog.mp4")
    shutil.copy(cli_files["a"], gd / "dog.mp4")  # identical pair
    shutil.copy(cli_files["a"], od / "owl.mp4")  # no counterpart
    frames = vm.read_video(cli_files["a"])[0]
    write_frames(od / "fox", frames)  # frame folders are paired by folder name
    write_frames(gd / "fox", frames[:, :, :, [2, 1, 0]])
    rc = vm.main(["--original_video", str(od), "--generated_video", str(gd), "--no_lpips",
                  "--json", str(tmp_path / "f.json"), "--csv", str(tmp_path / "f.csv")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "pairs" in cap.err  # progress bar on stderr
    doc = _strict_json(tmp_path / "f.json")
    names = [p["name"] for p in doc["pairs"]]
    assert names == ["cat", "dog", "fox"] and doc["unpaired"]["original"] == ["owl.mp4"]
    assert "MEAN (3 pairs)" in cap.out and "only in original folder (1): owl.mp4" in cap.out
    mean = doc["mean"]
    pooled = [p["summary"]["psnr_pooled"] for p in doc["pairs"]]
    assert pooled[1] is None and mean["n_identical_videos"] == 1  # dog: identical -> inf -> null
    assert mean["psnr_pooled"] == pytest.approx((pooled[0] + pooled[2]) / 2)
    assert mean["ssim_mean"] == pytest.approx(np.mean([p["summary"]["ssim_mean"] for p in doc["pairs"]]))
    csv_rows = (tmp_path / "f.csv").read_text().splitlines()
    assert sum(r.startswith("video,") for r in csv_rows) == 3 and csv_rows[-1].startswith("dataset_mean,")

    # a failing pair is reported, the others are still computed, the exit status is non-zero
    shutil.copy(cli_files["short"], gd / "owl.mp4")
    rc = vm.main(["--original_video", str(od), "--generated_video", str(gd), "--no_lpips", "--no_progress"])
    cap = capsys.readouterr()
    assert rc == 2 and "MEAN (3 pairs)" in cap.out and "FAILED" in cap.out
    lines = stderr_lines(cap.err)
    assert len(lines) == 1 and "pair 'owl'" in lines[0] and "frame count mismatch" in lines[0]


def test_cli_plot(cli_files, tmp_path, rand_alex, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    rc = vm.main(["--original_video", str(cli_files["a"]), "--generated_video", str(cli_files["b"]),
                  "--lpips_weights", str(rand_alex), "--no_progress", "--plot", str(png)])
    assert rc == 0, capsys.readouterr().err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_plot_without_matplotlib(cli_files, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    rc = vm.main(["--original_video", str(cli_files["a"]), "--generated_video", str(cli_files["b"]),
                  "--no_lpips", "--plot", str(tmp_path / "p.png")])
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == ""
    assert stderr_lines(cap.err) == ["video_metrics: error: --plot needs matplotlib, which is not installed (pip install matplotlib)"]


def test_cli_replaces_an_existing_output_only_with_overwrite(cli_files, tmp_path, capsys):
    """An existing --json is kept (one error line, nothing read or written) unless --overwrite; the
    replaced file is complete and has the user's umask, not a temporary file's 0600."""
    target = tmp_path / "m.json"
    target.write_text("previous")
    args = ["--original_video", str(cli_files["a"]), "--generated_video", str(cli_files["b"]), "--no_lpips",
            "--no_progress", "--json", str(target)]
    assert vm.main(args) == 2 and target.read_text() == "previous"
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    umask = os.umask(0o022)
    try:
        assert vm.main(args + ["--overwrite"]) == 0
    finally:
        os.umask(umask)
    assert _strict_json(target)["summary"]["n_frames"] == 8
    assert oct(target.stat().st_mode & 0o777) == oct(0o644) and sorted(os.listdir(tmp_path)) == ["m.json"]
