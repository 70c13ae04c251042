"""A seeded market simulator: random-walk prices, lognormal sizes, busy and quiet instruments.

Trades are generated as numpy columns, a chunk at a time, so the simulator can feed the
pipeline at millions of trades per second. With `clock=wall` trades carry the wall-clock
time and are paced at `rate`; with `clock=simulated` event times advance by 1/rate per trade
from `start_us` and nothing waits, so a seed gives the same trades every run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import ClassVar, Final, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.base import Connector, ConnectorConfig, Record, Rejected
from shared.models import TradeBatch

STEP_S: Final = 0.02
MAX_CHUNK: Final = 65_536


class SimulatorConfig(ConnectorConfig):
    model_config = SettingsConfigDict(env_prefix="MS_SIMULATOR_", extra="forbid")

    instruments: int = Field(100, ge=1, le=1_000_000, description="number of instruments")
    rate: float = Field(1000.0, gt=0, description="trades per second, all instruments together")
    count: int = Field(0, ge=0, description="stop after this many trades; 0 runs forever")
    seed: int = Field(42, description="random seed; the same seed gives the same trades")
    clock: Literal["wall", "simulated"] = "wall"
    start_us: int = Field(
        1_767_225_600_000_000, description="first event time with clock=simulated"
    )
    volatility: float = Field(2e-4, ge=0, description="standard deviation of a trade's log return")
    silence_per_hour: float = Field(
        2.0, ge=0, description="times per hour an instrument goes quiet"
    )
    silence_mean_s: float = Field(30.0, gt=0, description="mean length of a quiet stretch, seconds")
    prefix: str = Field("SIM", min_length=1, max_length=32)


class SimulatorConnector(Connector):
    name: ClassVar[str] = "simulator"
    Config: ClassVar[type[ConnectorConfig]] = SimulatorConfig

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        assert isinstance(config, SimulatorConfig)
        self.cfg = config
        n = config.instruments
        self.symbols = tuple(f"{config.prefix}{i:0{max(4, len(str(n)))}d}" for i in range(n))
        self.rng = np.random.default_rng(config.seed)
        log_prices = self.rng.uniform(np.log(5.0), np.log(500.0), n)
        self.price: NDArray[np.float64] = np.round(np.exp(log_prices), 2).astype(np.float64)
        ranks = np.arange(1, n + 1, dtype=np.float64)
        self.activity = 1.0 / ranks**0.8  # a few busy instruments, a long quiet tail
        self.rng.shuffle(self.activity)
        self.quiet_until_s = np.zeros(n)
        self.emitted = 0

    @property
    def live(self) -> bool:
        return self.cfg.clock == "wall"

    def chunk(self, size: int, step_start_s: float, step_s: float) -> TradeBatch:
        """Generate the next `size` trades, spread over [step_start_s, step_start_s + step_s)."""
        rng, n = self.rng, len(self.symbols)
        going_quiet = rng.random(n) < self.cfg.silence_per_hour * step_s / 3600
        self.quiet_until_s[going_quiet] = step_start_s + rng.exponential(
            self.cfg.silence_mean_s, going_quiet.sum()
        )
        weights = np.where(self.quiet_until_s > step_start_s, 0.0, self.activity)
        if weights.sum() == 0:
            weights = self.activity
        index = rng.choice(n, size=size, p=weights / weights.sum()).astype(np.int32)
        returns = rng.normal(0.0, self.cfg.volatility, size)
        prices = _walk(self.price, index, returns)
        sizes = np.maximum(1.0, np.round(rng.lognormal(3.0, 1.2, size)))
        sides = np.where(rng.random(size) < 0.5, 1, -1).astype(np.int8)
        offsets = np.sort(rng.random(size)) * step_s
        ts_event = np.int64(round(step_start_s * 1e6)) + (offsets * 1e6).astype(np.int64)
        self.emitted += size
        return TradeBatch(
            source=self.source,
            instruments=self.symbols,
            instrument_index=index,
            ts_event_us=ts_event,
            ts_recv_us=ts_event.copy()
            if self.cfg.clock == "simulated"
            else np.full(size, time.time_ns() // 1000),
            price=prices,
            size=sizes,
            side=sides,
        )

    def _size(self, budget: float) -> int:
        size = min(int(budget), MAX_CHUNK)
        if self.cfg.count:
            size = min(size, self.cfg.count - self.emitted)
        return size

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        if self.cfg.clock == "simulated":
            while not self.cfg.count or self.emitted < self.cfg.count:
                size = self._size(MAX_CHUNK)
                start_s = (self.cfg.start_us + self.emitted * 1e6 / self.cfg.rate) / 1e6
                yield self.chunk(size, start_s, size / self.cfg.rate)
                await asyncio.sleep(0)
            return
        budget = 0.0
        last = time.time()
        while not self.cfg.count or self.emitted < self.cfg.count:
            await asyncio.sleep(STEP_S)
            now = time.time()
            budget += (now - last) * self.cfg.rate
            last_step, last = last, now
            size = self._size(budget)
            if size > 0:
                budget -= size
                yield self.chunk(size, last_step, now - last_step)


def _walk(
    price: NDArray[np.float64], index: NDArray[np.int32], returns: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Apply each trade's log return to its instrument's price in order; update `price` in place.

    Prices are rounded to a cent and never fall below one.
    """
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    cumulative = np.cumsum(returns[order])
    starts = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
    group_offset = np.repeat(np.r_[0.0, cumulative][starts], np.diff(np.r_[starts, len(order)]))
    walked = price[sorted_index] * np.exp(cumulative - group_offset)
    out = np.empty_like(returns)
    out[order] = np.maximum(0.01, np.round(walked, 2))
    ends = np.r_[starts[1:], len(order)] - 1
    price[sorted_index[ends]] = out[order[ends]]
    return out
