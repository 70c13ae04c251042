"""What every benchmark scenario shares: results, machine facts, RSS, the broker, the table.

A scenario measures several paths (ours and its peers) over the same data; each path becomes a
PathResult and the run a Result, written as JSON under benchmarks/results/ and printed as a
table. Paths run in their own subprocess by default, so that peak RSS belongs to one path.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from shared import kafka_admin
from shared.topics import TopicSpec
from streams.embedded.broker import start_broker, stop_broker, tansu_binary
from streams.embedded.ports import free_port
from streams.embedded.postgres import ensure_database, start_postgres, stop_postgres
from streams.migrations import migrate

log = logging.getLogger(__name__)

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"
REPO_DIR: Final = Path(__file__).resolve().parent.parent
MB: Final = 1_000_000


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(slots=True)
class PathResult:
    """One measured path: what a measured run moved, how long each run took, latency and RSS.

    `items`, `messages` and `wire_bytes` are per measured run (every repeat moves the same
    data); rates use the median run time. Latency is produce-to-ack of one `latency_of`.
    """

    name: str
    description: str
    items: int
    messages: int
    wire_bytes: int
    run_seconds: list[float]
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_samples: int = 0
    latency_of: str = ""
    rss_before_mb: float | None = None
    rss_peak_mb: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return statistics.median(self.run_seconds)

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.wire_bytes / MB / self.seconds

    @property
    def rss_growth_mb(self) -> float | None:
        """Peak RSS during the measured runs above the RSS just before them (never negative)."""
        if self.rss_peak_mb is None or self.rss_before_mb is None:
            return None
        return max(0.0, self.rss_peak_mb - self.rss_before_mb)

    def to_json(self, unit: str) -> dict[str, Any]:
        """Return the stored fields plus the derived rates, named after the scenario's unit."""
        raw = dataclasses.asdict(self)
        return {
            **raw,
            "seconds_median": self.seconds,
            f"{unit}_per_s": self.items_per_s,
            f"{unit}_per_s_slowest_run": self.items / max(self.run_seconds),
            f"{unit}_per_s_fastest_run": self.items / min(self.run_seconds),
            "messages_per_s": self.messages_per_s,
            "mb_per_s": self.mb_per_s,
            "bytes_per_message": self.wire_bytes / self.messages if self.messages else None,
            "rss_growth_mb": self.rss_growth_mb,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PathResult:
        """Rebuild a PathResult from `to_json` output (derived keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class Result:
    """A scenario run: every path over the same data, with the machine and parameters."""

    scenario: str
    unit: str
    baseline: str
    parameters: dict[str, Any]
    paths: list[PathResult]
    machine: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float | None = None
    timestamp: str = field(default_factory=utc_now)

    def path(self, name: str) -> PathResult:
        return next(p for p in self.paths if p.name == name)

    def speedups(self) -> dict[str, float]:
        """Return baseline throughput over each other path's throughput, in the scenario's unit."""
        names = [p.name for p in self.paths]
        if self.baseline not in names:
            return {}
        ours = self.path(self.baseline).items_per_s
        return {p.name: ours / p.items_per_s for p in self.paths if p.name != self.baseline}

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "timestamp": self.timestamp,
            "unit": self.unit,
            "baseline": self.baseline,
            "machine": self.machine,
            "parameters": self.parameters,
            "wall_seconds": self.wall_seconds,
            "paths": {p.name: p.to_json(self.unit) for p in self.paths},
            "speedup": {f"{self.baseline}_vs_{name}": x for name, x in self.speedups().items()},
        }


def write_result(result: Result, path: Path) -> None:
    """Write `result` as indented JSON, creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    log.info("wrote %s", path)


def read_paths(path: Path) -> list[PathResult]:
    """Read the per-path results of a results file (a subprocess's output)."""
    data = json.loads(path.read_text())
    return [PathResult.from_json(p) for p in data["paths"].values()]


def percentiles_ms(seconds: Sequence[float], qs: Sequence[float] = (50, 99)) -> list[float | None]:
    """Return the `qs` percentiles of `seconds`, in milliseconds; None each when there are none."""
    if not seconds:
        return [None for _ in qs]
    values = np.percentile(np.asarray(seconds, dtype=np.float64) * 1000, list(qs))
    return [float(v) for v in values]


def _proc_status_kb(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def rss_mb() -> float | None:
    """Return this process's resident set size now, in MB (Linux only)."""
    kb = _proc_status_kb("VmRSS")
    return kb * 1024 / MB if kb is not None else None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark, so that a later peak belongs to what runs after this."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Return the peak RSS since start or since `reset_peak_rss`, in MB."""
    kb = _proc_status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * 1024 / MB


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{head}{'+dirty' if dirty else ''}"
    return None


def installed_version(python: str | None, distribution: str) -> str | None:
    """The version of `distribution` in another interpreter (a peer's own venv), or None."""
    if python is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            [python, "-c", f"import importlib.metadata as m; print(m.version({distribution!r}))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    return None


def machine_info(
    distributions: Sequence[str], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return what a reader needs to compare results across machines: CPU, OS, versions."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "git_commit": _git_commit(),
        "versions": {name: _version(name) for name in distributions} | (extra or {}),
    }


def tansu_version() -> str | None:
    """Return the bundled Tansu broker's version line, or None if it cannot be run."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [tansu_binary(), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        return out or None
    return None


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """Yield `bootstrap` if given, else start a Tansu broker on a free port and stop it after."""
    if bootstrap:
        yield bootstrap
        return
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="marketstream-bench-")) / "tansu.log"
    process = start_broker(port, log_path)
    log.info("started Tansu on 127.0.0.1:%d (pid %d, log %s)", port, process.pid, log_path)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_broker(process)
        log.info("stopped Tansu (pid %d)", process.pid)


def create_topic(bootstrap: str, like: TopicSpec, name: str, partitions: int) -> None:
    """Create topic `name` with `like`'s configs and `partitions` partitions."""
    spec = dataclasses.replace(like, name=name, partitions=partitions)
    if not kafka_admin.create_topics(bootstrap, (spec,)):
        log.warning("topic %s already existed; results include whatever it held", name)


def run_isolated(scenario: str, argv: Sequence[str], timeout_s: float = 900.0) -> list[PathResult]:
    """Run `python -m benchmarks <scenario> <argv>` in a fresh process; return its path results.

    A process per path keeps one path's memory, threads and warm caches out of another's figures.
    """
    with tempfile.TemporaryDirectory(prefix="marketstream-bench-") as tmp:
        out = Path(tmp) / f"{scenario}.json"
        command = [sys.executable, "-m", "benchmarks", scenario, *argv, "--out", str(out)]
        log.debug("running %s", " ".join(command))
        subprocess.run(
            command, cwd=REPO_DIR, check=True, timeout=timeout_s, stdout=subprocess.DEVNULL
        )
        return read_paths(out)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: Result) -> str:
    """Return the result as a fixed-width text table, one row per path."""
    speedups = result.speedups()
    header = [
        "path",
        f"{result.unit}/s",
        "msgs/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "latency of",
        "peak RSS MB",
        "run +MB",
        f"{result.baseline} x",
    ]
    rows = [header]
    for p in result.paths:
        rows.append(
            [
                p.name,
                _fmt(p.items_per_s, ",.0f"),
                _fmt(p.messages_per_s, ",.0f"),
                _fmt(p.mb_per_s, ",.1f"),
                _fmt(p.latency_p50_ms, ".2f"),
                _fmt(p.latency_p99_ms, ".2f"),
                p.latency_of or "-",
                _fmt(p.rss_peak_mb, ",.0f"),
                _fmt(p.rss_growth_mb, ",.0f"),
                _fmt(speedups.get(p.name), ".1f") if p.name != result.baseline else "1.0",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    left = {0, header.index("latency of")}
    lines = [
        "  ".join(
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def path_list(valid: Mapping[str, object]) -> Callable[[str], list[str]]:
    """Return an argparse type for a comma-separated list of path names from `valid`."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown path(s) {unknown}; valid: {', '.join(valid)}"
            )
        return names

    return parse


def add_paths_flag(
    parser: argparse.ArgumentParser, paths: Mapping[str, object], default_order: Sequence[str]
) -> None:
    """Declare `--paths`, the scenario's paths to run (all by default), in order."""
    parser.add_argument(
        "--paths",
        type=path_list(paths),
        default=",".join(default_order),
        help="comma-separated paths to run, in this order",
    )


def forwarded_flags(args: argparse.Namespace, dests: Sequence[str]) -> list[str]:
    """The command-line flags that give a child run the same values of `dests` as `args`."""
    argv: list[str] = []
    for dest in dests:
        argv += [f"--{dest.replace('_', '-')}", str(getattr(args, dest))]
    return argv


@contextlib.contextmanager
def postgres(root: Path) -> Iterator[str]:
    """An embedded PostgreSQL under `root / "pg"` with a migrated database; yield its URL."""
    data_dir, port = root / "pg", free_port()
    start_postgres(data_dir, port)
    try:
        url = ensure_database(port, "marketstream_bench")
        migrate(url)
        yield url
    finally:
        stop_postgres(data_dir)
