"""The command line the drop-in scripts share: the upstream parser captured before it parses,
one-line errors, the cache flags generated from the policy registry (styled as the host styles
its own flags), flags turned into a policy before any model loads, the calibration run, and
the report printed and written next to the video.
"""

import argparse
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple
from unittest import mock

from easycache.outputs import write_json
from easycache.policies.base import REGISTRY, Context, Flag, PolicySpec, SettingError, read_json_setting
from easycache.policies.calibration import MagnitudeRecorder, merge_calibration
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


def add_cache_flags(parser: argparse.ArgumentParser, host: CliHost, calibration: bool = True) -> None:
    """--cache (every registered policy the host offers, and none), each policy's flags with the
    host's defaults, --overwrite, and --calibrate."""
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
    ``args.cache_plan`` (a CachePlan; ``args.cache`` reads "calibrate" for the calibration run)."""
    parts = host.parts_of(args) if host.parts_of is not None else {None: num_steps}
    args.cache_plan = CachePlan(None, {part: None for part in parts})
    if getattr(args, "calibrate", None) is not None:
        check_calibration_file(args, host, parts, fail)
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


def policy_of(args, host: CliHost):
    """Fresh policies for one pipeline, as the command line asked: one, or one per part (None:
    the baseline)."""
    plan = args.cache_plan
    if args.cache == "calibrate":
        policies = {part: MagnitudeRecorder(len(host.branches), getattr(args, "use_ret_steps", False))
                    for part in plan.parts}
    elif plan.spec is None:
        return None
    else:
        policies = {part: plan.spec.make(**settings) for part, settings in plan.parts.items()}
    return policies[None] if list(policies) == [None] else policies


def cache_title(args) -> str:
    plan = args.cache_plan
    if args.cache == "calibrate":
        return "Calibration run (no cache)"
    if plan.spec is None:
        return "Baseline (no cache)"
    if list(plan.parts) == [None]:
        return plan.spec.title(plan.parts[None])
    return "; ".join(f"{part}-noise expert: {plan.spec.title(settings)}" for part, settings in plan.parts.items())


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


def write_reports(videos: Sequence[str], args, report: dict) -> None:
    """The report next to each video, never over an existing one unless --overwrite."""
    for path in videos:
        write_json(report_path(path), {"arguments": arguments_of(args), **report}, overwrite=args.overwrite)
        print(f"  video: {path}\n  report: {report_path(path)}")
