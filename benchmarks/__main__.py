"""`python -m benchmarks <scenario> [flags]`: run one scenario, write its JSON, print its table.

`python -m benchmarks <scenario> --help` lists the scenario's flags. Exit status: 0 done,
2 unknown scenario or bad flags.
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
from streams.runtime import configure_logging

log = logging.getLogger("benchmarks")

SCENARIOS: Final[dict[str, str]] = {
    "bars": "benchmarks.bars",
    "produce": "benchmarks.produce",
    "sink": "benchmarks.sink",
    "ws": "benchmarks.ws",
}


class Scenario(Protocol):
    """What a scenario module exposes."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> Result: ...


def load_scenario(name: str) -> Scenario:
    """Import the scenario registered as `name`; raise KeyError listing the valid names."""
    try:
        module = SCENARIOS[name]
    except KeyError:
        valid = ", ".join(sorted(SCENARIOS))
        raise KeyError(f"unknown scenario {name!r}; valid names: {valid}") from None
    return cast(Scenario, importlib.import_module(module))


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        valid = ", ".join(sorted(SCENARIOS))
        print(
            f"usage: python -m benchmarks <scenario> [flags]\nscenarios: {valid}", file=sys.stderr
        )
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    try:
        scenario = load_scenario(name)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
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
    configure_logging(args.log_level)
    started = time.perf_counter()
    result = scenario.run(args)
    result.wall_seconds = time.perf_counter() - started
    write_result(result, args.out)
    print(format_table(result))
    print(f"\n{name}: {result.wall_seconds:.1f} s in all; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
