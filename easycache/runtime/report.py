"""The report as the scripts print it."""


def format_report(report: dict) -> str:
    lines = []
    computed, total = report["dit_calls_computed"], report["dit_calls_total"]
    speedup = report["ideal_speedup"]
    ideal = f"  (ideal speed-up {speedup:.2f}x)" if speedup else ""
    if "blocks_run" in report:  # block-level caching: the model runs, some blocks are replayed
        lines.append(f"  DiT calls with every block computed: {computed}/{total}")
        lines.append(f"  transformer blocks run: {report['blocks_run']}/{report['blocks_total']}{ideal}")
    else:
        lines.append(f"  DiT calls computed: {computed}/{total}{ideal}")
    if report.get("reused_by_estimator"):
        lines.append("  reused calls estimated by: " + ", ".join(
            f"{name} {count}" for name, count in report["reused_by_estimator"].items()))
    for name, module in report.get("modules", {}).items():
        blocks = f", blocks run {module['blocks_run']}" if "blocks_run" in module else ""
        lines.append(f"    {name}: steps {module['first_step']}-{module['last_step']}, DiT calls computed "
                     f"{module['dit_calls_computed']}/{module['dit_calls_total']}{blocks}")
    if total != report["dit_calls_expected"] and report["num_steps"]:
        lines.append(f"  warning: expected {report['dit_calls_expected']} DiT calls "
                     f"({report['num_steps']} steps), saw {total}")
    lines.append(f"  DiT time: {report['dit_seconds']:.2f} s")
    if report["ranks_agree"] is not None:
        lines.append(f"  decisions identical on all {report['world_size']} ranks: "
                     f"{'yes' if report['ranks_agree'] else 'NO'}")
    for warning in report.get("warnings", ()):
        lines.append(f"  warning: {warning}")
    bad = report.get("nonfinite_calls")
    if bad:
        lines.append(f"  error: the DiT returned NaN or Inf on {len(bad)} call(s), first at step {bad[0]['step']} "
                     f"({bad[0]['branch']} branch)")
    return "\n".join(lines)
