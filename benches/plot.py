#!/usr/bin/env python3
"""Turn the text output of a full `cargo bench` run into Markdown tables and
PNG plots for BENCHMARKS.md.

Usage:
    cargo bench 2>&1 | tee run.log
    python3 benches/plot.py run.log --out docs/bench > tables.md

The input is what the six bench binaries print: criterion's result blocks
(name, then `time: [low estimate high]` and, where set, `thrpt: [...]`),
the read percentile table of `reads.rs` and the memory table of
`memory.rs`. Lines from criterion's comparison with an earlier run
(`change:` blocks) are skipped. Plots need matplotlib (tested with 3.11);
the tables do not.
"""

import argparse
import re
import sys
from pathlib import Path

# Seconds per unit of criterion's time output.
TIME_UNITS = {"ps": 1e-12, "ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
# Elements per second per unit of criterion's throughput output.
RATE_UNITS = {"elem/s": 1.0, "Kelem/s": 1e3, "Melem/s": 1e6, "Gelem/s": 1e9}

RESULT_LINE = re.compile(r"^(?:(?P<name>\S+)\s+)?(?P<kind>time|thrpt):\s+\[(?P<values>[^\]]*)\]")
PERCENTILE_ROW = re.compile(
    r"^(?P<store>\w+)\s+(?P<mode>idle|under_writer)\s+(?P<p50>\d+)\s+(?P<p99>\d+)"
    r"\s+(?P<p999>\d+)\s+(?P<max>\d+)\s+(?P<rate>\d+|-)\s*$"
)
MEMORY_ROW = re.compile(
    r"^(?P<design>\w+)\s+(?P<watcher>none|stalled)\s+(?P<before>[\d.]+)\s+(?P<after>[\d.]+)"
    r"\s+(?P<ratio>[\d.]+)x\s+(?P<state>\S+)\s*$"
)
MEMORY_HEADER = re.compile(r"^memory: resident set size after (\d+) CAS writes over (\d+) resources")


def parse_triple(values, units):
    """Parse `low estimate high` with a unit after each number."""
    tokens = values.split()
    if len(tokens) != 6:
        raise ValueError(f"expected three numbers with units, got {values!r}")
    triple = []
    for number, unit in zip(tokens[0::2], tokens[1::2]):
        if unit not in units:
            raise ValueError(f"unknown unit {unit!r} in {values!r}")
        triple.append(float(number) * units[unit])
    return tuple(triple)


def parse_log(lines):
    """Return criterion results, read percentiles and memory rows from a log.

    Criterion results map a benchmark id (`group/function[/parameter]`) to a
    dict with `time` (seconds) and, when the group sets a throughput,
    `thrpt` (elements per second), each a (low, estimate, high) triple.
    """
    results = {}
    percentiles = []
    memory = {"rows": []}
    pending_name = None
    in_change_block = False
    for raw in lines:
        line = raw.rstrip("\n")
        stripped = line.strip()
        if stripped == "change:":
            in_change_block = True
            continue
        match = RESULT_LINE.match(stripped)
        if match:
            name = match.group("name") or pending_name
            if in_change_block or "%" in match.group("values"):
                continue
            if name is None:
                raise ValueError(f"result line without a benchmark name: {line!r}")
            units = TIME_UNITS if match.group("kind") == "time" else RATE_UNITS
            results.setdefault(name, {})[match.group("kind")] = parse_triple(
                match.group("values"), units
            )
            continue
        # Any other line ends a change block; a bare id starts a result block.
        in_change_block = False
        if re.fullmatch(r"[a-z_]+/\S+", stripped) and not line.startswith(" "):
            pending_name = stripped
            continue
        if line.startswith("Benchmarking "):
            continue
        row = PERCENTILE_ROW.match(stripped)
        if row:
            entry = {key: row.group(key) for key in ("store", "mode")}
            for key in ("p50", "p99", "p999", "max"):
                entry[key] = int(row.group(key))
            rate = row.group("rate")
            entry["writer_rate"] = None if rate == "-" else int(rate)
            percentiles.append(entry)
            continue
        header = MEMORY_HEADER.match(stripped)
        if header:
            memory["writes"] = int(header.group(1))
            memory["resources"] = int(header.group(2))
            continue
        row = MEMORY_ROW.match(stripped)
        if row:
            memory["rows"].append(
                {
                    "design": row.group("design"),
                    "watcher": row.group("watcher"),
                    "before_mib": float(row.group("before")),
                    "after_mib": float(row.group("after")),
                    "ratio": float(row.group("ratio")),
                    "state": row.group("state"),
                }
            )
    return results, percentiles, memory


def format_time(seconds):
    """Format a duration with the unit criterion would pick."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-12:.3g} ps"


def format_rate(per_second):
    """Format a rate in elements per second."""
    for unit, scale in (("G/s", 1e9), ("M/s", 1e6), ("K/s", 1e3)):
        if per_second >= scale:
            return f"{per_second / scale:.3g} {unit}"
    return f"{per_second:.3g} /s"


def split_id(benchmark_id):
    """Split `group/function[/parameter]` into its three parts."""
    parts = benchmark_id.split("/")
    parameter = parts[2] if len(parts) > 2 else ""
    return parts[0], parts[1], parameter


def group_tables(results):
    """Return one Markdown table per criterion group, in log order."""
    groups = {}
    for benchmark_id, values in results.items():
        group, function, parameter = split_id(benchmark_id)
        groups.setdefault(group, []).append((function, parameter, values))
    tables = []
    for group, rows in groups.items():
        has_rate = any("thrpt" in values for _, _, values in rows)
        header = "| benchmark | parameter | time (low) | time | time (high) |"
        rule = "|---|---:|---:|---:|---:|"
        if has_rate:
            header += " throughput |"
            rule += "---:|"
        lines = [f"### {group}", "", header, rule]
        for function, parameter, values in rows:
            low, estimate, high = values["time"]
            cells = [
                function,
                parameter,
                format_time(low),
                format_time(estimate),
                format_time(high),
            ]
            if has_rate:
                cells.append(format_rate(values["thrpt"][1]) if "thrpt" in values else "")
            lines.append("| " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return tables


def percentile_table(percentiles):
    """Return the read percentiles as a Markdown table."""
    lines = [
        "| store | mode | p50 (ns) | p99 (ns) | p99.9 (ns) | max (ns) | writer writes/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for entry in percentiles:
        rate = "" if entry["writer_rate"] is None else str(entry["writer_rate"])
        lines.append(
            f"| {entry['store']} | {entry['mode']} | {entry['p50']} | {entry['p99']} | "
            f"{entry['p999']} | {entry['max']} | {rate} |"
        )
    return "\n".join(lines)


def memory_table(memory):
    """Return the memory rows as a Markdown table."""
    lines = [
        f"Resident set size after {memory.get('writes', '?')} CAS writes over "
        f"{memory.get('resources', '?')} resources.",
        "",
        "| design | watcher | before writes (MiB) | after writes (MiB) | vs no watcher | "
        "watcher state at the end |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in memory["rows"]:
        lines.append(
            f"| {row['design']} | {row['watcher']} | {row['before_mib']:.1f} | "
            f"{row['after_mib']:.1f} | {row['ratio']:.2f}x | `{row['state']}` |"
        )
    return "\n".join(lines)


def series(results, group, suffix=""):
    """Collect {function: [(parameter, values)]} for one group, sorted by parameter.

    With `suffix`, keep only functions ending in it and strip it.
    """
    found = {}
    for benchmark_id, values in results.items():
        benchmark_group, function, parameter = split_id(benchmark_id)
        if benchmark_group != group or not function.endswith(suffix):
            continue
        name = function[: len(function) - len(suffix)] if suffix else function
        found.setdefault(name, []).append((int(parameter), values))
    for points in found.values():
        points.sort(key=lambda point: point[0])
    return found


def plot_fanout(plt, results, out_dir):
    """Plot deliveries per second against watcher count, live and backlog."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, group, title in (
        (axes[0], "fanout_live", "live: writer and watchers together"),
        (axes[1], "fanout_backlog", "backlog: drain of committed events"),
    ):
        for name, points in sorted(series(results, group).items()):
            watchers = [parameter for parameter, _ in points]
            rates = [values["thrpt"][1] / 1e6 for _, values in points]
            axis.plot(watchers, rates, marker="o", label=name)
        axis.set_title(title)
        axis.set_xlabel("watcher threads")
        axis.set_xticks([1, 4, 8])
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("deliveries per second (millions, log scale)")
    axes[1].legend()
    figure.tight_layout()
    path = out_dir / "fanout.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_cas_write(plt, results, out_dir):
    """Plot the time per CAS write against the store size."""
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for name, points in sorted(series(results, "cas_write").items()):
        sizes = [parameter for parameter, _ in points]
        times = [values["time"][1] * 1e6 for _, values in points]
        errors = [
            [(values["time"][1] - values["time"][0]) * 1e6 for _, values in points],
            [(values["time"][2] - values["time"][1]) * 1e6 for _, values in points],
        ]
        axis.errorbar(sizes, times, yerr=errors, marker="o", capsize=3, label=name)
    axis.set_xscale("log")
    axis.set_xlabel("resources in the store (log scale)")
    axis.set_ylabel("µs per CAS write")
    axis.set_title("CAS write of a random existing resource")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path = out_dir / "cas_write.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_read_percentiles(plt, percentiles, out_dir):
    """Plot p50, p99 and p99.9 read latency per store, idle and under a writer."""
    stores = list(dict.fromkeys(entry["store"] for entry in percentiles))
    modes = ["idle", "under_writer"]
    keys = [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")]
    figure, axes = plt.subplots(1, len(keys), figsize=(12, 4.2), sharey=True)
    width = 0.38
    for axis, (key, label) in zip(axes, keys):
        for offset, mode in enumerate(modes):
            heights = []
            for store in stores:
                entry = next(
                    (e for e in percentiles if e["store"] == store and e["mode"] == mode), None
                )
                heights.append(entry[key] if entry else 0)
            positions = [index + (offset - 0.5) * width for index in range(len(stores))]
            axis.bar(positions, heights, width, label=mode.replace("_", " "))
        axis.set_xticks(range(len(stores)))
        axis.set_xticklabels(stores, rotation=15)
        axis.set_title(label)
        axis.set_yscale("log")
        axis.grid(True, axis="y", which="both", alpha=0.3)
    axes[0].set_ylabel("ns per read (log scale)")
    axes[0].legend(loc="upper left")
    figure.suptitle("Read latency, idle and with one saturating writer")
    figure.tight_layout()
    path = out_dir / "read_percentiles.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_watch_start(plt, results, out_dir):
    """Plot the time to the first event and to EndOfSnapshot against store size."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, suffix, title in (
        (axes[0], "_first_event", "time to the first event"),
        (axes[1], "_end_of_snapshot", "time to EndOfSnapshot"),
    ):
        for name, points in sorted(series(results, "watch_start", suffix).items()):
            sizes = [parameter for parameter, _ in points]
            times = [values["time"][1] for _, values in points]
            axis.plot(sizes, times, marker="o", label=name)
        axis.set_title(title)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("resources in the store (log scale)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds (log scale)")
    axes[1].legend()
    figure.tight_layout()
    path = out_dir / "watch_start.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path, help="text output of the bench run")
    parser.add_argument("--out", type=Path, help="directory for the PNG plots")
    args = parser.parse_args()

    with args.log.open(encoding="utf-8") as log:
        results, percentiles, memory = parse_log(log)
    if not results:
        sys.exit(f"no criterion results found in {args.log}")

    print("\n\n".join(group_tables(results)))
    if percentiles:
        print("\n### read latency percentiles\n")
        print(percentile_table(percentiles))
    if memory["rows"]:
        print("\n### memory\n")
        print(memory_table(memory))

    if args.out is None:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("matplotlib is not installed: `pip install matplotlib`, or omit --out")
    args.out.mkdir(parents=True, exist_ok=True)
    written = [
        plot_fanout(plt, results, args.out),
        plot_cas_write(plt, results, args.out),
        plot_watch_start(plt, results, args.out),
    ]
    if percentiles:
        written.append(plot_read_percentiles(plt, percentiles, args.out))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
