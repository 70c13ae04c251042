"""Follow a bar processor through its /metrics: trades processed, bars emitted, CPU, memory."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from benchmarks import common, processes
from shared.topics import BARS

STALL_S: Final = 60.0  # a processor that shows no progress for this long has failed


def _status_mb(pid: int, key: str) -> float | None:
    found = processes.status_bytes(pid, key)
    return None if found is None else found / common.MB


_SAMPLE: Final = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)", re.MULTILINE)
_LABEL: Final = re.compile(r'(\w+)="([^"]*)"')
Samples = list[tuple[str, dict[str, str], float]]


def scrape(url: str) -> Samples | None:
    """Return the samples of a Prometheus text endpoint, or None while it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    return [(m[1], dict(_LABEL.findall(m[2] or "")), float(m[3])) for m in _SAMPLE.finditer(text)]


@dataclass(slots=True)
class Progress:
    """A processor's counters: trades processed by `agent`, bars emitted, other agents' trades."""

    trades: int = 0
    bars_first: int = 0
    bars_revised: int = 0
    bars_sunk: int = 0
    bars_acked: int | None = None  # bars Kafka acknowledged, where the processor reports it
    bars_by_interval: dict[str, int] = field(default_factory=dict)
    other_agents: dict[str, int] = field(default_factory=dict)

    def out_on_kafka(self, bars: int) -> bool:
        return self.bars_first >= bars and (self.bars_acked is None or self.bars_acked >= bars)

    @classmethod
    def of(cls, samples: Samples, agent: str) -> Progress:
        p = cls()
        for name, labels, value in samples:
            if name == "trades_processed_total":
                if labels.get("agent") == agent:
                    p.trades = int(value)
                else:
                    p.other_agents[labels.get("agent", "?")] = int(value)
            elif name == "bars_sunk_total":
                p.bars_sunk = int(value)
            elif name == "kafka_messages_acked_total" and labels.get("topic") == BARS:
                p.bars_acked = int(value)
            elif name == "bars_emitted_total" and labels.get("kind") == "revision":
                p.bars_revised += int(value)
            elif name == "bars_emitted_total":
                p.bars_first += int(value)
                interval = labels.get("interval", "?")
                p.bars_by_interval[interval] = p.bars_by_interval.get(interval, 0) + int(value)
        return p


@dataclass(slots=True)
class Throughput:
    """What one run showed through the processor's /metrics, and its RSS and CPU time."""

    seconds: float
    trades: int
    trades_before: int
    seconds_to_all_trades: float
    start_to_first_trade_s: float
    progress: Progress
    rss_at_first_trade_mb: float | None
    rss_peak_mb: float | None
    cpu_s: float | None
    timeline: list[tuple[float, int, int]]

    def summary(self) -> dict[str, Any]:
        step = max(1, len(self.timeline) // 40)
        points = self.timeline[::step] + self.timeline[-1:]
        return {
            "seconds": self.seconds,
            "trades_timed": self.trades,
            "trades_before_first_poll": self.trades_before,
            "seconds_to_all_trades": self.seconds_to_all_trades,
            "start_to_first_trade_s": self.start_to_first_trade_s,
            "trades_per_s": self.trades / self.seconds,
            "timeline_s_trades_bars": [(round(t, 3), n, b) for t, n, b in points],
        }

    def cpu(self) -> dict[str, Any]:
        return {
            "process_cpu_s": self.cpu_s,
            "cores_busy": None if self.cpu_s is None else self.cpu_s / self.seconds,
        }


def watch(
    process: subprocess.Popen[bytes],
    url: str,
    agent: str,
    trades: int,
    bars: int,
    poll_s: float,
    log_path: Path,
) -> Throughput:
    """Poll `url` from the processor's start until it shows `trades` processed, `bars` emitted,
    and, where it reports acknowledgements (ours), `bars` acknowledged by Kafka."""
    launched = time.monotonic()
    first: tuple[float, int] | None = None
    trades_done: float | None = None
    rss_at_first: float | None = None
    cpu_before: float | None = None
    last_change, last_seen = launched, (-1, -1)
    timeline: list[tuple[float, int, int]] = []
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"{agent} exited with {process.returncode}:\n{processes.tail(log_path)}"
            )
        samples = scrape(url)
        now = time.monotonic()
        if samples is None:
            if now - launched > 120:
                raise TimeoutError(f"{agent} did not serve {url}:\n{processes.tail(log_path)}")
            time.sleep(poll_s)
            continue
        progress = Progress.of(samples, agent)
        if first is None and progress.trades > 0:
            first = (now, progress.trades)
            cpu_before = processes.cpu_s(process.pid)
            rss_at_first = _status_mb(process.pid, "VmRSS")
            processes.reset_peak(process.pid)
        if first is not None:
            timeline.append((now - first[0], progress.trades, progress.bars_first))
            if trades_done is None and progress.trades >= trades:
                trades_done = now
            if trades_done is not None and progress.out_on_kafka(bars):
                cpu_after = processes.cpu_s(process.pid)
                return Throughput(
                    seconds=now - first[0],
                    trades=trades - first[1],
                    trades_before=first[1],
                    seconds_to_all_trades=trades_done - first[0],
                    start_to_first_trade_s=first[0] - launched,
                    progress=progress,
                    rss_at_first_trade_mb=rss_at_first,
                    rss_peak_mb=_status_mb(process.pid, "VmHWM"),
                    cpu_s=None if None in (cpu_before, cpu_after) else cpu_after - cpu_before,  # type: ignore[operator]
                    timeline=timeline,
                )
        seen = (progress.trades, progress.bars_first)
        if seen != last_seen:
            last_seen, last_change = seen, now
        elif now - last_change > STALL_S:
            raise TimeoutError(
                f"{agent} stalled at {seen[0]} of {trades} trades, {seen[1]} of {bars} bars:\n"
                f"{processes.tail(log_path)}"
            )
        time.sleep(poll_s)


def settle(
    pid: int, busy_below: float = 0.2, window_s: float = 0.5, timeout_s: float = 120.0
) -> float:
    """Wait until `pid` uses less than `busy_below` of a core over `window_s`; return seconds."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = processes.cpu_s(pid)
        time.sleep(window_s)
        after = processes.cpu_s(pid)
        if before is None or after is None or (after - before) / window_s < busy_below:
            break
    return time.monotonic() - started


def wait_sunk(url: str, bars: int, timeout_s: float = 300.0) -> float | None:
    """Wait until the worker's sink has written `bars` rows; return seconds, None on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if Progress.of(scrape(url) or [], "aggregate_bars").bars_sunk >= bars:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def bars_check(expected: dict[str, int], progress: Progress, trades: int) -> dict[str, Any]:
    total = sum(expected.values())
    return {
        "expected": total,
        "emitted": progress.bars_first,
        "revisions": progress.bars_revised,
        "ok": progress.bars_first == total and not progress.bars_revised,
        "bars_per_trade": total / trades,
        "by_interval": {
            name: {"expected": n, "emitted": progress.bars_by_interval.get(name, 0)}
            for name, n in expected.items()
        },
    }
