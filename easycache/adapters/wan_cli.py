"""The command line of the Wan drop-in scripts (Wan2.1, Wan2.2): the checkout's ``generate.py``
found and imported, its parser captured, the input checks ``generate.py`` would only fail on
after loading the models, savers that write whole files, and the run around its own
``generate(args)`` with the cache on every pipeline it builds."""

import contextlib
import importlib
import os
import sys
import time
from typing import Callable, Optional, Sequence
from unittest import mock

import torch

from easycache.cli import (RunOutputs, cache_title, capture_parser, check_diagnosis_apart, print_report, report_path,
                           write_recordings, write_reports)
from easycache.outputs import folder_problem, same_file
from easycache.policies.base import Flag, SettingError
from easycache.runtime.session import NoCallSeen


def import_generate(prog: str, repository: str, script_file: str):
    """Import generate.py from the checkout the script was copied into (or the current directory)."""
    for root in (os.path.dirname(os.path.abspath(script_file)), os.getcwd()):
        if os.path.isfile(os.path.join(root, "generate.py")) and os.path.isdir(os.path.join(root, "wan")):
            if root not in sys.path:
                sys.path.insert(0, root)
            try:
                with importable_without_gpu():
                    return importlib.import_module("generate")
            except ImportError as error:
                sys.exit(f"{prog}: error: cannot import the checkout's generate.py ({error}); install its "
                         "requirements (pip install -r requirements.txt)")
    sys.exit(f"{prog}: error: generate.py and wan/ not found; copy this script into the root of a "
             f"{os.path.basename(repository)} checkout ({repository}) and run it there")


@contextlib.contextmanager
def importable_without_gpu():
    """Wan's text encoder evaluates ``torch.cuda.current_device()`` as a default argument when
    imported, which fails on a machine without a GPU (a login node, a CI box): there, the import
    gets device 0 for that default, so --help and every argument check work (a run is stopped
    later, with one line, by ``require_gpu``)."""
    if torch.cuda.is_available():
        yield
        return
    with mock.patch.object(torch.cuda, "current_device", lambda: 0):
        yield


def generate_parser(gen):
    """generate.py's parser, captured before it parses."""
    return capture_parser(gen._parse_args, "generate.py's _parse_args()")


def check_wan_inputs(args, fail: Callable[[str], None], inputs: Sequence[str], images: Sequence[str] = ()) -> None:
    """The checkpoint folder, every input file (``images`` opened as images), and the output: what
    generate.py would fail on (or overwrite) only after loading the models."""
    if args.ckpt_dir is None:
        fail("--ckpt_dir is required: the directory holding the model's weights")
    if not os.path.isdir(args.ckpt_dir):
        fail(f"--ckpt_dir {args.ckpt_dir} is not a directory")
    for path in filter(None, inputs):
        if os.path.isdir(path):
            fail(f"input file {path} is a folder")
        if not os.path.isfile(path):
            fail(f"input file {path} does not exist")
        if os.path.getsize(path) == 0:
            fail(f"input file {path} is empty")
    for path in filter(None, images):
        try:
            from PIL import Image
            with Image.open(path) as image:
                image.verify()
        except Exception as error:  # PIL raises several types for what is not an image
            fail(f"input file {path} is not an image ({type(error).__name__}: {error})".split("\n")[0])
    if args.save_file is None:
        return
    for path in filter(None, inputs):
        if same_file(path, args.save_file):
            fail(f"--save_file {args.save_file} is the input {path}; choose another path")
    if os.path.isdir(args.save_file):
        fail(f"--save_file {args.save_file} is a folder, expected a file path")
    check_diagnosis_apart(args, [args.save_file], fail)
    if not args.overwrite:
        for path in (args.save_file, report_path(args.save_file)):
            if os.path.exists(path):
                fail(f"{path} exists; pass --overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(args.save_file))
    if not os.path.isdir(folder):
        fail(f"the directory of --save_file {args.save_file} does not exist")
    problem = folder_problem(folder)
    if problem:
        fail(f"--save_file {args.save_file}: {problem}")


DELTA_FOREGROUND = Flag("delta_foreground", "foreground", str, None,
                        "comma-separated blocks that always run (default: the published profile, Wan2.1 t2v-14B only)")


def delta_profile(settings: dict, num_layers: int, published: Optional[Sequence[int]], task: str) -> dict:
    """The delta cache's settings with --delta_foreground (or the published profile) as the
    blocks that replay deltas."""
    settings = dict(settings)
    foreground = settings.pop("foreground")
    if foreground is None:
        if published is None:
            raise SettingError(f"no published delta-cache profile for --task {task} (only Wan2.1 t2v-14B); pass "
                               "--delta_foreground with the blocks that must always run")
        foreground = published
    else:
        try:
            foreground = [int(b) for b in foreground.split(",")]
        except ValueError:
            raise SettingError(f"--delta_foreground must be comma-separated block indices, got {foreground}") from None
    if not all(0 <= b < num_layers for b in foreground):
        raise SettingError(f"--delta_foreground blocks must lie in 0..{num_layers - 1} for --task {task}")
    return dict(settings, cached={"blocks": [b for b in range(num_layers) if b not in foreground]})


def whole_file_saver(saver, overwrite: bool, outputs: RunOutputs, invalid: Callable[[], Optional[str]]):
    """``saver(..., save_file=path)`` writing to a temporary name, renamed when complete (whether it
    worked is read off the file: Wan's savers log their errors and return None); nothing is
    written when the video is invalid."""
    def save(*args, save_file, **kwargs):
        outputs.save(save_file, lambda tmp: saver(*args, save_file=tmp, **kwargs), overwrite, invalid())
        return save_file
    return save


def run_generate(gen, args, pipelines: Sequence[str], savers: Sequence[str], enable: Callable) -> dict:
    """generate.py's generate(args), with ``enable(pipe)`` on each pipeline class in ``pipelines``
    it builds and whole-file ``savers``; prints the report on rank 0, writes it next to the
    video and, for a valid video, what a calibration or diagnosis run recorded."""
    caches, outputs = [], RunOutputs()

    def with_cache(pipeline_class):
        def build(*a, **kw):
            pipe = pipeline_class(*a, **kw)
            caches.append(enable(pipe))
            return pipe
        return build

    patches = [mock.patch.object(gen.wan, name, with_cache(getattr(gen.wan, name)))
               for name in pipelines if hasattr(gen.wan, name)]
    invalid = lambda: caches[-1].session.invalid_output() if caches else None  # noqa: E731
    patches += [mock.patch.object(gen, name, whole_file_saver(getattr(gen, name), args.overwrite, outputs, invalid))
                for name in savers if hasattr(gen, name)]
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        gen.generate(args)
    total_seconds = time.perf_counter() - started

    report = caches[-1].report(allow_warnings=True)
    report["total_seconds"] = total_seconds
    rank_0 = int(os.getenv("RANK", 0)) == 0
    if rank_0:
        print_report(f"{cache_title(args)} report for {args.task}, {args.sample_steps} steps", report, "generate",
                     total_seconds)
        write_reports(outputs.reported[-1:], args, report, outputs.refused_paths)
    outputs.raise_if_refused()
    if report["warnings"]:
        raise NoCallSeen("; ".join(report["warnings"]))
    if rank_0:
        write_recordings(args, caches[-1], {"task": args.task, "size": args.size, "sample_steps": args.sample_steps})
    return report
