"""`python -m benchmarks <scenario> [flags]`: run one scenario, write its JSON, print its table.

`python -m benchmarks <scenario> --help` lists the scenario's flags. Exit status: 0 done,
2 unknown scenario, bad flags, or a --bootstrap broker or --database-url database that cannot
be reached; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path
from typing import Final, Protocol, cast

from benchmarks.common import RESULTS_DIR, Result, format_table, write_result
from shared.cli import ArgumentParser, configure_logging, require_broker, require_database, run_cli
from shared.errors import ConfigError

log = logging.getLogger("benchmarks")

SCENARIOS: Final[dict[str, str]] = {
    "bars": "benchmarks.bars",
    "gaps": "benchmarks.gaps",
    "matching": "benchmarks.matching",
    "produce": "benchmarks.produce",
    "providers": "benchmarks.providers",
    "read_api": "benchmarks.read_api",
    "sink": "benchmarks.sink",
    "soak": "benchmarks.soak",
    "ws": "benchmarks.ws",
}


class Scenario(Protocol):
    """What a scenario module exposes."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> Result: ...


def load_scenario(name: str) -> Scenario:
    """Import the scenario registered as `name`; raise ConfigError listing the valid names."""
    try:
        module = SCENARIOS[name]
    except KeyError:
        valid = ", ".join(sorted(SCENARIOS))
        raise ConfigError(f"unknown scenario {name!r}; valid names: {valid}") from None
    return cast(Scenario, importlib.import_module(module))


def main(argv: list[str]) -> int:
    valid = ", ".join(sorted(SCENARIOS))
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: python -m benchmarks <scenario> [flags]\nscenarios: {valid}")
        return 0
    if not argv or argv[0].startswith("-"):
        raise ConfigError(f"usage: python -m benchmarks <scenario> [flags]; scenarios: {valid}")
    name, rest = argv[0], argv[1:]
    scenario = load_scenario(name)
    parser = ArgumentParser(
        prog=f"python -m benchmarks {name}", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    scenario.add_arguments(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR / f"{name}.json",
        help="where to write the results JSON",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level")
    args = parser.parse_args(rest)
    if getattr(args, "bootstrap", None):
        require_broker(args.bootstrap, "--bootstrap")
    if getattr(args, "database_url", None):
        require_database(args.database_url, "--database-url")
    configure_logging(args.log_level)
    started = time.perf_counter()
    result = scenario.run(args)
    result.wall_seconds = time.perf_counter() - started
    write_result(result, args.out)
    print(format_table(result))
    print(f"\n{name}: {result.wall_seconds:.1f} s in all; results in {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
