"""Replay trades from a CSV or JSON Lines file, in file order, at a chosen speed.

Both formats carry `ts,symbol,price,size` (ts ISO-8601 in UTC, e.g.
`2026-01-02T14:30:00.123456Z`; a time without an offset is taken as UTC) and may add `side`
(buy/sell) and `trade_id`; other columns are ignored. A CSV row is one line. A row that does not
parse becomes a dead letter with its line number and the reason; the rest still goes through.

Each run is a source of its own (`replay:<file name>:<run id>`), with its own event-time clock,
so replaying any file, again or after a later one, yields exactly its bars; `--source NAME`
joins the trades to an existing source's clock instead (e.g. a live feed's, where they may be
late).
"""

from __future__ import annotations

import asyncio
import csv
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Final, Literal

import orjson
from pydantic import Field, field_validator
from pydantic_settings import CliPositionalArg, SettingsConfigDict

from connectors.base import Connector, ConnectorConfig, FatalError, Record, Rejected
from shared.models import Side, Trade
from shared.symbols import symbol_problem

REQUIRED: Final = ("ts", "symbol", "price", "size")
SIDES: Final = {
    "": Side.UNKNOWN,
    "buy": Side.BUY,
    "b": Side.BUY,
    "1": Side.BUY,
    "sell": Side.SELL,
    "s": Side.SELL,
    "-1": Side.SELL,
}
CHUNK_ROWS: Final = 4096
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class ReplayConfig(ConnectorConfig):
    model_config = SettingsConfigDict(env_prefix="MS_REPLAY_", extra="forbid")

    path: CliPositionalArg[Path]
    speed: float | Literal["max"] = Field(
        "max", description="1 = real time, 10 = ten times faster, max = no waiting"
    )
    format: Literal["auto", "csv", "jsonl"] = "auto"
    source: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="the event-time clock the trades join; default: one of this run's own, "
        "replay:<file name>:<run id>, so that any file replays into exactly its bars",
    )

    @field_validator("path")
    @classmethod
    def _readable(cls, path: Path) -> Path:
        if not path.exists() or path.is_dir():  # pipes and /dev/stdin are welcome
            raise ValueError(f"{path} is not a file")
        return path

    @field_validator("speed")
    @classmethod
    def _positive(cls, v: float | str) -> float | str:
        if v != "max" and not (isinstance(v, float) and v > 0 and math.isfinite(v)):
            raise ValueError("speed must be a positive number or 'max'")
        return v


def parse_timestamp_us(text: str) -> int:
    """Parse ISO-8601 to microseconds since the epoch (UTC); raise ValueError if it does not parse."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _positive(text: object, what: str) -> float | str:
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        return f"{what} {text!r} is not a number"
    try:
        value = float(text)
    except ValueError:
        return f"{what} {text!r} is not a number"
    if not math.isfinite(value) or value <= 0:
        return f"{what} {text!r} must be a finite number > 0"
    return value


def parse_fields(fields: dict[str, object], raw: bytes, line: int) -> Trade | Rejected:
    """Validate one row's fields; return the Trade or a Rejected with a reason code."""
    missing = [k for k in REQUIRED if fields.get(k) in (None, "")]
    if missing and missing != ["symbol"]:
        return Rejected("malformed_row", f"missing {', '.join(missing)}", raw, line)
    symbol = fields.get("symbol") or ""
    if not isinstance(symbol, str):
        return Rejected("bad_symbol", f"symbol {symbol!r} is not a string", raw, line)
    if problem := symbol_problem(symbol):
        return Rejected("bad_symbol", problem, raw, line)
    try:
        ts_us = parse_timestamp_us(str(fields["ts"]))
    except ValueError:
        return Rejected("bad_timestamp", f"ts {fields['ts']!r} is not ISO-8601", raw, line)
    price = _positive(fields["price"], "price")
    if isinstance(price, str):
        return Rejected("bad_price", price, raw, line)
    size = _positive(fields["size"], "size")
    if isinstance(size, str):
        return Rejected("bad_size", size, raw, line)
    side = SIDES.get(str(fields.get("side") or "").strip().lower())
    if side is None:
        return Rejected("bad_side", f"side {fields.get('side')!r} is not buy or sell", raw, line)
    return Trade(symbol, ts_us, price, size, side, str(fields.get("trade_id") or ""))


def parse_csv(lines: Iterator[str]) -> Iterator[Trade | Rejected]:
    """Parse CSV lines (header first); yield one Trade or Rejected per data row."""
    header_line = next(lines, "")
    header = [h.strip() for h in next(csv.reader([header_line]), [])]
    if absent := [k for k in REQUIRED if k not in header]:
        raise FatalError(f"CSV header {header_line.strip()!r} lacks {', '.join(absent)}")
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        raw = line.rstrip("\r\n").encode()
        try:
            row = next(csv.reader([line]))
        except csv.Error as exc:
            yield Rejected("malformed_row", f"CSV error: {exc}", raw, number)
            continue
        if len(row) != len(header):
            yield Rejected(
                "malformed_row", f"{len(row)} fields, header has {len(header)}", raw, number
            )
            continue
        yield parse_fields(dict(zip(header, row, strict=True)), raw, number)


def parse_jsonl(lines: Iterator[str]) -> Iterator[Trade | Rejected]:
    """Parse JSON Lines; yield one Trade or Rejected per non-blank line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        raw = line.rstrip("\r\n").encode()
        try:
            fields = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield Rejected("malformed_row", f"invalid JSON: {exc}", raw, number)
            continue
        if not isinstance(fields, dict):
            yield Rejected("malformed_row", "line is not a JSON object", raw, number)
            continue
        yield parse_fields(fields, raw, number)


class ReplayConnector(Connector):
    name: ClassVar[str] = "replay"
    Config: ClassVar[type[ConnectorConfig]] = ReplayConfig

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        assert isinstance(config, ReplayConfig)
        self.cfg = config
        self._source = config.source or f"replay:{config.path.name}:{uuid.uuid4().hex[:8]}"

    @property
    def source(self) -> str:
        return self._source

    @property
    def origin(self) -> str:
        return str(self.cfg.path)

    def closes_clock(self, finished: bool) -> bool:
        """A run's own source has no future, finished or not: close its bars. A source joined
        with --source is someone else's clock: leave it where the feed has it."""
        return self.cfg.source is None

    @property
    def live(self) -> bool:
        return False

    def _format(self) -> Literal["csv", "jsonl"]:
        if self.cfg.format != "auto":
            return self.cfg.format
        return "jsonl" if self.cfg.path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        try:
            handle = self.cfg.path.open(encoding="utf-8-sig", errors="replace", newline="")
        except OSError as exc:
            raise FatalError(f"cannot open {self.cfg.path}: {exc}") from exc
        parse = parse_jsonl if self._format() == "jsonl" else parse_csv
        speed = None if self.cfg.speed == "max" else float(self.cfg.speed)
        first_ts_us: int | None = None
        latest_ts_us = 0
        wall_start = time.monotonic()
        with handle:
            for count, item in enumerate(parse(iter(handle)), start=1):
                if isinstance(item, Trade) and speed is not None:
                    if first_ts_us is None:
                        first_ts_us = latest_ts_us = item.ts_event_us
                    if item.ts_event_us > latest_ts_us:  # earlier (out-of-order) rows never wait
                        latest_ts_us = item.ts_event_us
                        due = wall_start + (latest_ts_us - first_ts_us) / 1e6 / speed
                        if (delay := due - time.monotonic()) > 0:
                            await asyncio.sleep(delay)
                yield item
                if count % CHUNK_ROWS == 0:
                    await asyncio.sleep(0)
