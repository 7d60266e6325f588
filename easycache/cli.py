"""The command line the drop-in scripts share: the upstream parser captured before it parses,
one-line errors, the cache flags generated from the policy registry (styled as the host styles
its own flags), flags turned into a policy before any model loads, the calibration and
diagnosis runs, and the report printed and written next to the video.
"""

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple
from unittest import mock

from easycache.outputs import InvalidOutput, atomic_write, folder_problem, write_json
from easycache.policies.base import REGISTRY, Context, Flag, PolicySpec, SettingError, read_json_setting
from easycache.policies.calibration import MagnitudeRecorder, merge_calibration
from easycache.policies.diagnosis import EstimatorRecorder, diagnosis_figure, diagnosis_of, diagnosis_table
from easycache.runtime.report import format_report

DEFAULT_POLICY = "easycache"


class _ParserCaptured(Exception):
    pass


def capture_parser(build: Callable[[], Any], what: str) -> argparse.ArgumentParser:
    """The parser ``build()`` makes (the upstream script's parse-args function), captured
    before it parses, so the scripts extend the host's own flags instead of copying them."""
    def capture(parser, *args, **kwargs):
        raise _ParserCaptured(parser)
    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        try:
            build()
        except _ParserCaptured as captured:
            return captured.args[0]
    raise RuntimeError(f"{what} did not build a parser")


def one_line_errors(parser: argparse.ArgumentParser, prog: str) -> Callable[[str], None]:
    """Make ``parser`` print one ``prog: error: ...`` line and exit 2; return that function."""
    parser.prog = prog

    def fail(message):
        parser.exit(2, f"{prog}: error: {message}\n")
    parser.error = fail
    return fail


@dataclass(frozen=True)
class CliHost:
    """What the generated flags need to know of a host. ``defaults``: the adapter's per-policy
    defaults. ``kebab``: flags are spelled --ret-steps (with --ret_steps as an alias).
    ``steps_flag``: the host's step-count flag. ``omitted``: per policy, settings the host offers
    no flag for. ``extra_flags``: per policy, the host's own flags (block profiles).
    ``published(policy, setting, settings, args)``: a published constant, or SettingError.
    ``finish(policy, settings, args)``: the host's last word on the settings (block profiles).
    ``levels``: the policy levels the script offers. Where one video is served by several
    models (Wan2.2's experts), ``parts_of(args)`` gives each part's step count ({None: steps}
    for one model) and ``part_flags`` per policy the flags that set a setting for one part only
    (``(part, Flag)``, default None: the shared flag's value)."""

    name: str
    branches: Tuple[str, ...]
    defaults: Dict[str, dict]
    steps_flag: str
    kebab: bool = False
    omitted: Dict[str, FrozenSet[str]] = field(default_factory=dict)
    extra_flags: Dict[str, Tuple[Flag, ...]] = field(default_factory=dict)
    published: Optional[Callable[[str, str, dict, argparse.Namespace], Any]] = None
    finish: Optional[Callable[[str, dict, argparse.Namespace], dict]] = None
    levels: Tuple[str, ...] = ("model", "blocks")
    parts_of: Optional[Callable[[argparse.Namespace], Dict[Optional[str], int]]] = None
    part_flags: Dict[str, Tuple[Tuple[str, Flag], ...]] = field(default_factory=dict)
    default_notes: Dict[str, Dict[str, str]] = field(default_factory=dict)  # a default not a value (per task)

    def options(self, name: str) -> List[str]:
        """The option strings of a flag named ``name`` (snake case)."""
        kebab = name.replace("_", "-")
        return [f"--{kebab}", f"--{name}"] if self.kebab and kebab != name else [f"--{name}"]

    def offered(self) -> List[PolicySpec]:
        return [spec for spec in REGISTRY.values() if spec.make.level in self.levels]

    def flags(self, spec: PolicySpec) -> List[Flag]:
        """The policy's flags on this host: its own (less the omitted), the host's, the per-part ones."""
        omitted = self.omitted.get(spec.name, frozenset())
        return ([f for f in spec.flags if f.setting not in omitted] + list(self.extra_flags.get(spec.name, ()))
                + [flag for _, flag in self.part_flags.get(spec.name, ())])


def add_cache_flags(parser: argparse.ArgumentParser, host: CliHost, calibration: bool = True,
                    diagnosis: bool = True) -> None:
    """--cache (every registered policy the host offers, and none), each policy's flags with the
    host's defaults, --overwrite, --calibrate and --diagnose."""
    offered = host.offered()
    group = parser.add_argument_group("cache")
    summaries = "; ".join(f"{spec.name}: {spec.summary}" for spec in offered)
    group.add_argument("--cache", choices=[spec.name for spec in offered] + ["none"], default=DEFAULT_POLICY,
                       help=f"{summaries}; none: the baseline, every step computed, through this script "
                            f"(default: {DEFAULT_POLICY})")
    group.add_argument("--overwrite", action="store_true",
                       help="replace an existing output and its report (default: refuse)")
    if calibration:
        group.add_argument("--calibrate", metavar="JSON", default=None,
                           help="run uncached and record MagCache's ratios and TeaCache's polynomial for this model "
                                "and step count into JSON (added to it if it exists: run it on several prompts)")
    if diagnosis:
        group.add_argument("--diagnose", metavar="JSON", default=None,
                           help="run uncached and measure, per CFG branch, how well reusing the transformation "
                                "vector (delta = v - x, EasyCache's), reusing the output v, or their damped "
                                "extrapolations would have predicted each DiT call from the calls g and 2g steps "
                                "before it (g = 1, 2, 3): print a table, write the errors per step to JSON and a "
                                "plot next to it (JSON's name with .png); an existing file is replaced only with "
                                "--overwrite")
    for spec in offered:
        target = group if spec.name == DEFAULT_POLICY else parser.add_argument_group(f"with --cache {spec.name}")
        defaults = host.defaults.get(spec.name, {})
        per_part = {flag.name for _, flag in host.part_flags.get(spec.name, ())}  # their help says their default
        notes = host.default_notes.get(spec.name, {})
        for flag in host.flags(spec):
            options = host.options(flag.name)
            if flag.switch:
                target.add_argument(*options, dest=flag.name, action="store_true", help=flag.help)
                continue
            default = flag.default if flag.name in per_part else defaults.get(flag.setting, flag.default)
            shown = None if flag.name in per_part else notes.get(flag.setting, default)
            target.add_argument(*options, dest=flag.name, type=flag.type, default=default,
                                help=flag.help + (f" (default: {shown})" if shown is not None else ""))


@dataclass(frozen=True)
class CachePlan:
    """What the cache flags ask for, settled before any model loads: ``spec`` the policy (None:
    the baseline, or the calibration run), ``parts`` its settings per part of the pipeline (the
    part None for a pipeline with one model; Wan2.2 A14B: "high" and "low")."""

    spec: Optional[PolicySpec]
    parts: Dict[Optional[str], Optional[dict]]


def check_cache_flags(args: argparse.Namespace, host: CliHost, fail: Callable[[str], None]) -> None:
    """Every cache flag's value on its own (numbers in range), whichever policy is chosen."""
    for spec in host.offered():
        for flag in host.flags(spec):
            value = getattr(args, flag.name)
            problem = flag.check(value) if flag.check is not None and value is not None else None
            if problem:
                fail(f"{host.options(flag.name)[0]} {problem}, got {value}")


def policy_from_args(args: argparse.Namespace, host: CliHost, num_steps: int, fail: Callable[[str], None]) -> None:
    """Turn the chosen policy's flags into its settings, before any model loads, as
    ``args.cache_plan`` (a CachePlan; ``args.cache`` reads "calibrate" for the calibration run,
    "diagnose" for the diagnosis run)."""
    parts = host.parts_of(args) if host.parts_of is not None else {None: num_steps}
    args.cache_plan = CachePlan(None, {part: None for part in parts})
    calibrate, diagnose = getattr(args, "calibrate", None), getattr(args, "diagnose", None)
    if calibrate is not None and diagnose is not None:
        fail("--calibrate and --diagnose are two separate uncached runs; pass one of them")
    if calibrate is not None:
        check_calibration_file(args, host, parts, fail)
        return
    if diagnose is not None:
        check_diagnosis_file(args, fail)
        return
    if args.cache == "none":
        return
    spec = REGISTRY[args.cache]
    flags = {f.setting: f for f in spec.flags + tuple(host.extra_flags.get(spec.name, ()))}
    offered = {f.setting for f in host.flags(spec)}
    shared = {s: getattr(args, f.name) if s in offered else f.default for s, f in flags.items()}
    plan = {}
    for part, steps in parts.items():
        settings, part_flag = dict(shared), dict(flags)
        for owner, flag in host.part_flags.get(spec.name, ()):
            if owner == part and getattr(args, flag.name) is not None:
                settings[flag.setting], part_flag[flag.setting] = getattr(args, flag.name), flag

        def flag_of(setting, part=part, part_flag=part_flag):
            if setting == "num_steps":
                return host.steps_flag if part is None else f"the {part}-noise expert's steps"
            return host.options(part_flag[setting].name)[0]

        def published(policy, setting, current):
            if host.published is None:
                raise SettingError(f"{host.name} has no published {setting} for --cache {policy}; pass "
                                   f"{host.options(flags[setting].name)[0]}")
            return host.published(policy, setting, current, args)
        try:
            if spec.prepare is not None:
                settings = spec.prepare(settings, Context(steps, len(host.branches), flag_of, published, part))
            if host.finish is not None:
                settings = host.finish(spec.name, settings, args)
        except SettingError as error:
            fail(str(error))
        plan[part] = settings
    args.cache_plan = CachePlan(spec, plan)


def check_calibration_file(args, host: CliHost, parts: Dict[Optional[str], int], fail) -> None:
    if args.cache != DEFAULT_POLICY:
        fail("--calibrate runs without a cache; drop --cache")
    args.cache = "calibrate"
    if os.path.exists(args.calibrate):
        try:
            previous = read_json_setting(args.calibrate, "--calibrate")
        except SettingError as error:
            fail(str(error))
        entries = previous.get("experts", {None: previous})
        if set(entries) != set(parts) or any(len(entries[part].get("magcache_ratios", [])) != len(host.branches) * steps
                                             for part, steps in parts.items()):
            fail(f"{args.calibrate} was calibrated for another step count or model; use another file")


def diagnosis_plot_path(path: str) -> str:
    """Where the diagnosis run's plot goes: next to its JSON, with the same stem."""
    return os.path.splitext(path)[0] + ".png"


def check_diagnosis_file(args, fail) -> None:
    """--diagnose: no cache, and its JSON and plot writable without replacing a file unless
    --overwrite."""
    if args.cache != DEFAULT_POLICY:
        fail("--diagnose runs without a cache; drop --cache")
    args.cache = "diagnose"
    path, plot = args.diagnose, diagnosis_plot_path(args.diagnose)
    if os.path.abspath(path) == os.path.abspath(plot):
        fail(f"--diagnose {path}: the plot is written next to the JSON as {os.path.basename(plot)}; "
             "name the JSON with another extension (e.g. .json)")
    for output in (path, plot):
        if os.path.isdir(output):
            fail(f"--diagnose {path}: {output} is a folder, expected a file path")
        if os.path.exists(output) and not args.overwrite:
            fail(f"{output} exists; pass --overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        fail(f"the directory of --diagnose {path} does not exist")
    problem = folder_problem(folder)
    if problem:
        fail(f"--diagnose {path}: {problem}")


def check_diagnosis_apart(args, videos: Sequence[str], fail) -> None:
    """--diagnose's JSON and plot are not one of the run's videos or their reports."""
    if getattr(args, "diagnose", None) is None:
        return
    taken = {os.path.abspath(path) for video in videos for path in (video, report_path(video))}
    for output in (args.diagnose, diagnosis_plot_path(args.diagnose)):
        if os.path.abspath(output) in taken:
            fail(f"--diagnose {args.diagnose}: {output} is also a video or report of this run; choose another name")


def policy_of(args, host: CliHost):
    """Fresh policies for one pipeline, as the command line asked: one, or one per part (None:
    the baseline)."""
    plan = args.cache_plan
    if args.cache == "calibrate":
        policies = {part: MagnitudeRecorder(len(host.branches), getattr(args, "use_ret_steps", False))
                    for part in plan.parts}
    elif args.cache == "diagnose":
        policies = {part: EstimatorRecorder() for part in plan.parts}
    elif plan.spec is None:
        return None
    else:
        policies = {part: plan.spec.make(**settings) for part, settings in plan.parts.items()}
    return policies[None] if list(policies) == [None] else policies


def cache_title(args) -> str:
    plan = args.cache_plan
    if args.cache == "calibrate":
        return "Calibration run (no cache)"
    if args.cache == "diagnose":
        return "Diagnosis run (no cache)"
    if plan.spec is None:
        return "Baseline (no cache)"
    if list(plan.parts) == [None]:
        return plan.spec.title(plan.parts[None])
    return "; ".join(f"{part}-noise expert: {plan.spec.title(settings)}" for part, settings in plan.parts.items())


@dataclass
class RunOutputs:
    """The videos a run wrote, and those it refused to write because their content is invalid
    (the DiT returned NaN or Inf): those get their report, not a file that looks like a video."""

    saved: List[str] = field(default_factory=list)
    refused: List[Tuple[str, str]] = field(default_factory=list)

    def save(self, path: str, write: Callable[[str], Any], overwrite: bool, invalid: Optional[str]) -> None:
        if invalid:
            self.refused.append((path, invalid))
            return
        atomic_write(path, write, overwrite)
        self.saved.append(path)

    @property
    def reported(self) -> List[str]:
        return self.saved + self.refused_paths

    @property
    def refused_paths(self) -> List[str]:
        return [path for path, _ in self.refused]

    def raise_if_refused(self) -> None:
        if self.refused:
            path, reason = self.refused[0]
            raise InvalidOutput(f"{path} not written: {reason}; its report is {report_path(path)}")


def require_gpu(prog: str, model: str, checkout) -> None:
    """The upstream code runs on CUDA only: without a GPU, stop with one line before any model
    loads (--help and the argument checks work without one). A checkout that runs on the CPU says
    so with a module attribute RUNS_ON_CPU = True (the test suite's stand-ins do)."""
    import torch
    if not torch.cuda.is_available() and not getattr(checkout, "RUNS_ON_CPU", False):
        sys.exit(f"{prog}: error: {model} needs a CUDA GPU to run and none is visible (torch.cuda.is_available() "
                 "is False); --help and the argument checks work without one")


def report_path(video_path: str) -> str:
    return os.path.splitext(video_path)[0] + ".report.json"


def arguments_of(args) -> dict:
    """The arguments as the report records them (the plan is in the report's own fields)."""
    return {name: value for name, value in vars(args).items() if name != "cache_plan"}


def print_report(title: str, report: dict, entry: str, total_seconds: float) -> None:
    print(f"{title}:")
    print(format_report(report))
    print(f"  {entry} time: {report[f'{entry}_seconds']:.2f} s   total time: {total_seconds:.2f} s")


def write_calibration(path: str, recorders: Dict[Optional[str], MagnitudeRecorder], described: dict) -> None:
    """Add this run's measurements to the --calibrate file (one entry per part, where the
    pipeline has parts)."""
    previous = read_json_setting(path, "--calibrate") if os.path.exists(path) else None
    if list(recorders) == [None]:
        calibration = merge_calibration(previous, recorders[None])
        videos = calibration["videos"]
    else:
        experts = {part: merge_calibration((previous or {}).get("experts", {}).get(part), recorder)
                   for part, recorder in recorders.items()}
        calibration = {"experts": experts}
        videos = next(iter(experts.values()))["videos"]
    write_json(path, {**described, **calibration}, overwrite=True)
    print(f"  calibration ({videos} video(s)): {path}")


def write_diagnosis(path: str, cache, described: dict, overwrite: bool, arguments: Optional[dict] = None) -> dict:
    """The diagnosis run's table on stdout, its JSON (``described``: the host and the model, then
    the measurements and the run's ``arguments``) and its plot next to it (none, in one line,
    without matplotlib)."""
    result = diagnosis_of(cache)
    print(diagnosis_table(result))
    write_json(path, {**described, **result, **({"arguments": arguments} if arguments is not None else {})},
               overwrite=overwrite)
    print(f"  diagnosis: {path}")
    plot = diagnosis_plot_path(path)
    try:
        figure = diagnosis_figure(result)
    except ImportError:
        stale = f"; {plot} is from an earlier run" if os.path.exists(plot) else ""
        print(f"  plot: none (matplotlib is not installed; pip install matplotlib for {os.path.basename(plot)}){stale}")
        return result
    atomic_write(plot, lambda tmp: figure.savefig(tmp, format="png", dpi=100), overwrite)
    print(f"  plot: {plot}")
    return result


def write_recordings(args, cache, described: dict) -> None:
    """What an uncached recording run measured, once its video is valid: the --calibrate file,
    or the --diagnose table, JSON and plot. ``described``: the host's description of the model
    and the run (task, size, steps)."""
    if args.cache == "calibrate":
        write_calibration(args.calibrate, cache.policies, described)
    elif args.cache == "diagnose":
        write_diagnosis(args.diagnose, cache, described, args.overwrite, arguments_of(args))


def write_reports(videos: Sequence[str], args, report: dict, refused: Sequence[str] = ()) -> None:
    """The report next to each video, never over an existing one unless --overwrite; ``refused``:
    those of the videos not written (invalid)."""
    for path in videos:
        write_json(report_path(path), {"arguments": arguments_of(args), **report}, overwrite=args.overwrite)
        state = " (not written: invalid)" if path in refused else ""
        print(f"  video: {path}{state}\n  report: {report_path(path)}")
