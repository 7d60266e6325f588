"""Helpers the tests share: paths, running a script as a user does, loading a script as a
module, and running a function on two ranks over gloo."""

import importlib.util
import json
import os
import subprocess
import sys

import torch

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
WAN21_STANDIN = os.path.join(TESTS, "standins", "wan21")
WAN22_STANDIN = os.path.join(TESTS, "standins", "wan22")
HUNYUAN_STANDIN = os.path.join(TESTS, "standins", "hunyuanvideo")
WAN21_SCRIPT = os.path.join(ROOT, "wan2_1", "easycache_generate.py")
WAN22_SCRIPT = os.path.join(ROOT, "wan2_2", "easycache_generate.py")
HUNYUAN_SCRIPT = os.path.join(ROOT, "hunyuanvideo", "easycache_sample_video.py")
SVG_SCRIPT = os.path.join(ROOT, "hunyuanvideo", "hyvideo_svg_easycache.py")


def run_script(script, args, cwd, timeout=300, env=None, torchrun=0):
    """``script`` run in ``cwd`` as a user runs it (``torchrun``: that many processes)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    env.pop("WORLD_SIZE", None)
    launcher = [sys.executable]
    if torchrun:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
    return subprocess.run([*launcher, script, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)


def load_script(path, name):
    """A drop-in script imported by path, as a user's ``from easycache_generate import ...`` does."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_two_ranks(tmp_path, function, *args):
    """``function(rank, *args)`` in two processes joined by a gloo process group; returns what each
    returned (JSON-serialisable), rank 0 first."""
    import torch.multiprocessing as mp
    mp.spawn(_rank_main, args=(str(tmp_path), function, args), nprocs=2)
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]


def _rank_main(rank, tmp, function, args):
    import torch.distributed as dist
    torch.set_num_threads(1)
    for path in (ROOT, TESTS):
        if path not in sys.path:
            sys.path.insert(0, path)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2)
    result = function(rank, *args)
    with open(os.path.join(tmp, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    # leaving through interpreter teardown can abort in gloo's thread destructors ("terminate
    # called without an active exception") after the work is done
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def make_wan21_dit_return_nan(monkeypatch, wan21_generate):
    """Every WanT2V the Wan2.1 stand-in builds gets a DiT whose outputs are all NaN (a diverged
    model): what the scripts must catch before writing anything."""
    real = wan21_generate.wan.WanT2V

    def poisoned(*args, **kwargs):
        pipe = real(*args, **kwargs)
        inner = pipe.model.forward
        pipe.model.forward = lambda *x, **k: [torch.full_like(v, float("nan")) for v in inner(*x, **k)]
        return pipe
    monkeypatch.setattr(wan21_generate.wan, "WanT2V", poisoned)


def loss_before_and_after_one_step(loss, optimizer):
    """``loss()`` before and after one optimiser step on it (the training-step tests of both test beds)."""
    before = loss()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss()
    return before, after
