"""What one soak run's samples come to: rates, latency, RSS trends, loss, and the table."""

from __future__ import annotations

import argparse
import os
from typing import Any, Final

from benchmarks.common import PathResult
from benchmarks.soak_check import histogram_merge, histogram_summary, rss_trend
from benchmarks.soak_stack import bucket_quantile
from shared.topics import TRADES

SUSTAINED_SHARE: Final = 0.97  # published and folded at least this share of the rate asked
SUSTAINED_LAG_S: Final = 5.0  # and the bars worker at most this many seconds of input behind


def label(rate: float) -> str:
    return f"rate_{rate / 1000:g}k" if rate >= 1000 else f"rate_{rate:g}"


def _rate(measured: list[dict[str, Any]], key: str) -> float | None:
    seconds = measured[-1]["t_s"] - measured[0]["t_s"]
    return (measured[-1][key] - measured[0][key]) / seconds if seconds > 0 else None


def details(
    args: argparse.Namespace,
    rate: float,
    samples: list[dict[str, Any]],
    measured: list[dict[str, Any]],
    published: int | None,
    end: dict[str, Any],
    drain_s: float,
    check: dict[str, Any],
) -> dict[str, Any]:
    due: dict[int, int] = {}
    emit: dict[int, int] = {}
    received = {"bars": 0, "frames": 0, "bytes": 0, "resyncs": 0, "errors": 0, "closed": 0}
    for s in measured[1:]:
        histogram_merge(due, s["clients"]["due_ms"])
        histogram_merge(emit, s["clients"]["emit_ms"])
        for key in received:
            received[key] += s["clients"].get(key, 0)
    names = sorted({n for s in samples for n in s["memory_mb"]})
    rss = {
        n: rss_trend(
            [s["t_s"] for s in measured if s["memory_mb"].get(n) is not None],
            [s["memory_mb"][n] for s in measured if s["memory_mb"].get(n) is not None],
        )
        for n in names
    }
    seconds = measured[-1]["t_s"] - measured[0]["t_s"]
    cpu = {
        n: (measured[-1]["cpu_s"][n] - measured[0]["cpu_s"][n]) / seconds
        for n in measured[0]["cpu_s"]
        if seconds > 0 and None not in (measured[0]["cpu_s"][n], measured[-1]["cpu_s"][n])
    }
    busy0, busy1 = measured[0]["machine_jiffies"], measured[-1]["machine_jiffies"]
    machine = None
    if busy0 and busy1 and busy1[1] > busy0[1]:
        machine = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1])
    cpus = len(os.sched_getaffinity(0))
    published_rate, folded_rate = _rate(measured, "published"), _rate(measured, "folded")
    messages_rate = _rate(measured, "trade_messages") or 0.0
    lag_end = measured[-1]["lag_worker"].get(TRADES, 0.0)
    lag_s = lag_end / messages_rate if messages_rate else None
    loss_ok = (
        published is not None
        and published == end["tallied"] == end["folded"]
        and end["dead_letters"] == 0
        and end["delivery_failures"] == 0
        and bool(check.get("ok"))
    )
    return {
        "rate_asked": rate,
        "published_per_s": published_rate,
        "tallied_per_s": _rate(measured, "tallied"),
        "folded_per_s": folded_rate,
        "bars_emitted_per_s": _rate(measured, "bars_emitted"),
        "bars_sunk_per_s": _rate(measured, "bars_sunk"),
        "sustained": bool(
            published_rate
            and folded_rate
            and published_rate >= SUSTAINED_SHARE * rate
            and folded_rate >= SUSTAINED_SHARE * published_rate
            and lag_s is not None
            and lag_s <= SUSTAINED_LAG_S
        ),
        "worker_lag_end_messages": lag_end,
        "worker_lag_end_s_of_input": lag_s,
        "cpu_cores": cpu,
        "machine_busy_fraction": machine,
        "other_processes_cpu_cores": None
        if machine is None
        else max(0.0, machine * cpus - sum(cpu.values())),
        "latency_due": histogram_summary(due),
        "latency_emit_to_client": histogram_summary(emit),
        "gateway_publish_latency_ms_p99_bucket": bucket_quantile(
            measured[0]["ws_latency"], measured[-1]["ws_latency"], 0.99
        ),
        "worker_emit_delay_s_p99_bucket": bucket_quantile(
            measured[0]["emit_delay"], measured[-1]["emit_delay"], 0.99
        ),
        "received": received,
        "rss": rss,
        "loss": {
            "ok": loss_ok,
            "published": published,
            "tallied": end["tallied"],
            "folded": end["folded"],
            "bars_sunk": end["bars_sunk"],
            "dead_letters": end["dead_letters"],
            "delivery_failures": end["delivery_failures"],
            "drained_in_time": published is not None
            and min(end["tallied"], end["folded"]) >= published,
            "drain_s": drain_s,
            "window_check": check,
        },
        "timeline": [_row(s) for s in samples],
    }


def _row(s: dict[str, Any]) -> dict[str, Any]:
    """One sample, as the results keep it."""
    lat = histogram_summary({int(k): v for k, v in s["clients"]["due_ms"].items()})
    return {
        "t_s": round(s["t_s"], 2),
        "memory_mb": {k: round(v, 1) for k, v in s["memory_mb"].items() if v is not None},
        "published": s["published"],
        "folded": s["folded"],
        "bars_sunk": s["bars_sunk"],
        "lag_worker": s["lag_worker"],
        "lag_sink": s["lag_sink"],
        "dead_letters": s["dead_letters"],
        "ws_clients": s["ws_clients"],
        "ws_dropped": s["ws_dropped"],
        "bars_received": s["clients"]["bars"],
        "latency_due_p50_p99_ms": [lat["p50_ms"], lat["p99_ms"]],
    }


def result(
    args: argparse.Namespace, rate: float, d: dict[str, Any], measured: list[dict[str, Any]]
) -> PathResult:
    seconds = measured[-1]["t_s"] - measured[0]["t_s"]
    totals = [
        sum(v for k, v in s["memory_mb"].items() if v is not None and k != "clients")
        for s in measured
    ]
    return PathResult(
        name=label(rate),
        description=f"make up's pipeline at {rate:,.0f} trades/s asked, {args.instruments} "
        f"instruments, {d['subscribed']} WebSocket subscribers, {args.minutes:g} min",
        items=round((d["folded_per_s"] or 0.0) * seconds),
        messages=d["received"]["bars"],
        wire_bytes=d["received"]["bytes"],
        run_seconds=[seconds],
        latency_p50_ms=d["latency_due"]["p50_ms"],
        latency_p99_ms=d["latency_due"]["p99_ms"],
        latency_samples=d["latency_due"]["samples"],
        latency_of=f"{args.interval} bar, window end + grace to client",
        rss_before_mb=totals[0] if totals else None,
        rss_peak_mb=max(totals) if totals else None,
        details=d,
    )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_details(paths: list[PathResult]) -> str:
    """The soak's figures, one row per rate, then every process's RSS trend."""
    lines = []
    for p in paths:
        d = p.details
        lines.append(
            f"{p.name}: published {_fmt(d['published_per_s'], ',.0f')}/s, folded "
            f"{_fmt(d['folded_per_s'], ',.0f')}/s, bars sunk {_fmt(d['bars_sunk_per_s'], ',.0f')}/s"
            f", sustained {d['sustained']}; bar latency p50 {_fmt(p.latency_p50_ms, '.0f')} ms, "
            f"p99 {_fmt(p.latency_p99_ms, '.0f')} ms (emit to client p99 "
            f"{_fmt(d['latency_emit_to_client']['p99_ms'], '.0f')} ms); worker lag at the end "
            f"{_fmt(d['worker_lag_end_s_of_input'], '.1f')} s; loss ok {d['loss']['ok']} "
            f"(published {d['loss']['published']}, folded {d['loss']['folded']:.0f}, "
            f"window {d['loss']['window_check'].get('equal')}/"
            f"{d['loss']['window_check'].get('expected')} bars equal)"
        )
        for name, t in d["rss"].items():
            lines.append(
                f"  {name:<11} RSS {_fmt(t.get('first_mb'), ',.0f')} -> "
                f"{_fmt(t.get('last_mb'), ',.0f')} MB, slope "
                f"{_fmt(t['slope_mb_per_min'], '+.2f')} MB/min, flat {t['flat']}, CPU "
                f"{_fmt(d['cpu_cores'].get(name), '.2f')} cores"
            )
    return "\n".join(lines) + "\n"
