"""`python -m streams.matching join --a A.csv --b B.csv --out matches.csv [--top-k 10]`.

Inputs have the header `id,title,close_date,category` (close_date an ISO date; an optional
fifth column `rules`); the output has `a_id,b_id,score,rank,decision`, up to k rows per A
listing, sorted by a_id then rank. Timing and counts go to stdout. Exit status: 0 done;
2 a missing file, a bad header, date or flag (one line on stderr); 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Final

from shared.cli import ArgumentParser, configure_logging, run_cli
from shared.errors import ConfigError
from streams.matching.join import DECISIONS, Listing, Thresholds, build_index, join

INPUT_HEADER: Final = ("id", "title", "close_date", "category")
OPTIONAL_COLUMNS: Final = ("rules",)
OUTPUT_HEADER: Final = ("a_id", "b_id", "score", "rank", "decision")


def read_listings(path: Path) -> list[Listing]:
    """Read a listings CSV; raise ConfigError naming the file and line of a bad header or row."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = tuple(next(reader, ()))
        if header[:4] != INPUT_HEADER or not set(header[4:]) <= set(OPTIONAL_COLUMNS):
            raise ConfigError(
                f"{path}: header is {','.join(header) or '(empty)'}; expected "
                f"{','.join(INPUT_HEADER)}[,rules]"
            )
        listings: list[Listing] = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ConfigError(f"{path}:{line}: {len(row)} fields, expected {len(header)}")
            try:
                close = dt.date.fromisoformat(row[2]) if row[2] else None
            except ValueError:
                raise ConfigError(
                    f"{path}:{line}: close_date {row[2]!r} is not an ISO date"
                ) from None
            rules = row[4] if len(row) > 4 else ""
            listings.append(Listing(row[0], row[1], close, row[3], rules))
    return listings


def _join(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    a_listings, b_listings = read_listings(args.a), read_listings(args.b)
    read_s = time.perf_counter() - started
    thresholds = Thresholds(top_k=args.top_k, window_days=args.window_days)
    a, b = build_index(a_listings), build_index(b_listings)
    index_s = time.perf_counter() - started - read_s
    result = join(a, b, thresholds)
    pairs = result.pairs(a, b)
    join_s = time.perf_counter() - started - read_s - index_s
    with args.out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(OUTPUT_HEADER)
        writer.writerows((p.a_id, p.b_id, f"{p.score:.4f}", p.rank, p.decision) for p in pairs)
    total = time.perf_counter() - started
    counts = Counter(p.decision for p in pairs)
    per_decision = ", ".join(f"{counts[d]} {d}" for d in reversed(DECISIONS))
    print(
        f"joined {len(a)} x {len(b)} listings in {total:.2f} s (read {read_s:.2f} s, "
        f"extract+index {index_s:.2f} s, join {join_s:.2f} s): {len(pairs)} rows "
        f"({per_decision}) to {args.out}"
    )
    return 0


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m streams.matching", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("join", help="match every listing of A against B")
    cmd.add_argument("--a", type=Path, required=True, help="listings CSV of venue A")
    cmd.add_argument("--b", type=Path, required=True, help="listings CSV of venue B")
    cmd.add_argument("--out", type=Path, required=True, help="where to write the matches CSV")
    cmd.add_argument("--top-k", type=int, default=Thresholds().top_k, help="rows per A listing")
    cmd.add_argument(
        "--window-days",
        type=int,
        default=Thresholds().window_days,
        help="only pairs whose decisive dates are this close are scored",
    )
    cmd.add_argument("--log-level", default="WARNING", help="logging level")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    configure_logging(args.log_level)
    return _join(args)


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
