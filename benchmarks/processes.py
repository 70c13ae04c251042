"""A benchmark's child processes, and what /proc tells of them: CPU time, memory, load."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_DIR

log = logging.getLogger(__name__)


def start(
    command: list[str], env: dict[str, str], log_path: Path, **popen: Any
) -> subprocess.Popen[Any]:
    """Start `command` in the repository with `env` added; its output goes to `log_path`."""
    with log_path.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=REPO_DIR,
            env={**os.environ, **env},
            stdout=popen.pop("stdout", out),
            stderr=out,
            stdin=popen.pop("stdin", subprocess.DEVNULL),
            **popen,
        )


def stop(
    process: subprocess.Popen[Any], sig: signal.Signals = signal.SIGTERM, timeout_s: float = 20.0
) -> None:
    """Send `sig`, then SIGKILL if the process has not exited within `timeout_s`."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop; killing it", process.pid)
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def running(
    command: list[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[Any]]:
    """Run `command` for the duration of the block; stop it (SIGTERM, then SIGKILL) after."""
    process = start(command, env, log_path)
    try:
        yield process
    finally:
        stop(process)


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, for the error message when a child fails."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def status_bytes(pid: int, key: str) -> int | None:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM, ...) in bytes."""
    with contextlib.suppress(OSError):
        match = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
        return int(match.group(1)) * 1024 if match else None
    return None


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) the process has used so far."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def reset_peak(pid: int) -> None:
    """Reset the kernel's peak-RSS mark of `pid` (VmHWM), so the peak belongs to what follows."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def machine_busy() -> tuple[float, float] | None:
    """Return (busy, total) jiffies of the whole machine so far, from /proc/stat."""
    with contextlib.suppress(OSError, ValueError):
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]
        return float(sum(values) - idle), float(sum(values))
    return None
