"""Local fake provider servers speaking the providers' documented protocols, for tests and
`make up` without keys. Their data is made up: none starts under MS_REAL_DATA_ONLY=true."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from shared.settings import DataPolicySettings, load_settings


def refuse_where_only_real_data_flows(name: str) -> None:
    """Exit with status 2 and one line if MS_REAL_DATA_ONLY=true (a fake's entry point)."""
    if load_settings(DataPolicySettings).real_data_only:
        print(f"error: MS_REAL_DATA_ONLY=true: the fake {name} does not start", file=sys.stderr)
        raise SystemExit(2)


def fake_parser(
    name: str, module: str, port: int, description: str | None
) -> argparse.ArgumentParser:
    """A fake's command line, `--host` and `--port` to start with; refuses to go on (exit 2)
    where only real data may flow."""
    refuse_where_only_real_data_flows(name)
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port, help="0: any free port")
    return parser


def serve_until_interrupted(main: Coroutine[Any, Any, None]) -> None:
    """Run a fake's main coroutine, logging at INFO, until Ctrl-C or the process is stopped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main)
