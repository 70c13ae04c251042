"""Waiting for services on loopback."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_port_run(count: int) -> int:
    """Return the first of `count` consecutive ports on 127.0.0.1 that nothing holds right
    now: the stack gives its feeds the connector port and the ports after it."""
    while True:
        first = free_port()
        if first + count <= 65536 and all(_can_bind(first + k) for k in range(1, count)):
            return first


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_listening(port: int, timeout_s: float, what: str, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on `port`; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while not is_listening(port, host):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout_s:.0f} s")
        time.sleep(0.05)
