"""`python -m gateways.ws.watch`: a small client that prints bars, trades and quotes from the
gateway, for people.

Exit status: 0 printed --count messages; 1 the gateway closed the stream; 2 a bad argument, a
missing key file, a refused key (close code 4401) or a gateway that cannot be reached;
130 interrupted.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from shared.api_keys import CLOSE_UNAUTHORIZED
from shared.cli import ArgumentParser, reason, run_cli
from shared.errors import ConfigError, FatalError, MarketstreamError, UnreachableError

DEFAULT_KEY_FILE = Path(".run/ws-api-key")


def closed_error(exc: ConnectionClosed) -> MarketstreamError:
    """Describe why the gateway closed the connection; a refused key is fatal (exit status 2)."""
    frame = exc.rcvd
    if frame is not None and frame.code == CLOSE_UNAUTHORIZED:
        return FatalError(f"the gateway refused the API key (close code {frame.code})")
    if frame is None:
        return MarketstreamError("the gateway closed the connection without a close frame")
    return MarketstreamError(
        f"the gateway closed the connection (close code {frame.code}{': ' if frame.reason else ''}"
        f"{frame.reason})"
    )


LIVE = ("bar", "trade", "quote")


def describe(event: dict[str, Any]) -> str | None:
    """One line for a live message or a snapshot; None for what is best shown as JSON."""
    kind, channel = event["type"], f"{event.get('channel', ''):<24}"
    if kind == "bar":
        b = event["bar"]
        return (
            f"{channel} seq {event['seq']:>6} rev {event['revision']}  {b['ts']}"
            f"  O {b['open']} H {b['high']} L {b['low']} C {b['close']} V {b['volume']:g}"
        )
    if kind == "trade":
        t = event["trade"]
        return f"{channel} seq {event['seq']}  {t['ts']}  {t['size']:g} @ {t['price']}  {t['provider']}"
    if kind == "quote":
        q = event["quote"]
        return (
            f"{channel} seq {event['seq']}  {q['ts']}  {q['bid_size']:g} x {q['bid_price']}"
            f" / {q['ask_price']} x {q['ask_size']:g}  {q['provider']}"
        )
    if kind == "snapshot":
        items = next(k for k in ("bars", "trades", "quotes", "arb") if k in event)
        return f"{channel} snapshot of {len(event[items])} {items} as of seq {event['seq']}"
    return None


async def watch(url: str, key: str, channels: list[str], count: int) -> int:
    """Subscribe, print one line per event, stop after `count` bars, trades or quotes (0: never).

    Raise FatalError if the key is refused, UnreachableError if the gateway cannot be reached,
    and MarketstreamError if the gateway closes the stream.
    """
    seen = 0
    try:
        ws = await connect(url, additional_headers={"X-API-Key": key})
    except InvalidURI as exc:
        raise ConfigError(f"--url {url}: {exc}") from exc
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            raise FatalError(f"the gateway refused the API key (HTTP {status})") from exc
        raise UnreachableError(f"no gateway at --url {url}: HTTP {status}") from exc
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise UnreachableError(f"cannot reach the gateway at --url {url}: {reason(exc)}") from exc
    async with ws:
        try:
            await ws.send(
                orjson.dumps({"op": "subscribe", "channels": channels, "snapshot": 3}).decode()
            )
            while True:
                for event in orjson.loads(await ws.recv()):
                    line = describe(event)
                    print(line or orjson.dumps(event).decode())
                    seen += event["type"] in LIVE
                if count and seen >= count:
                    return seen
        except ConnectionClosed as exc:
            raise closed_error(exc) from exc


def main() -> int:
    parser = ArgumentParser(prog="python -m gateways.ws.watch", description=__doc__)
    parser.add_argument(
        "channels", nargs="+", help="e.g. bars.1s.SIM0001, bars.1m.*, trades.AAPL, quotes.AAPL"
    )
    parser.add_argument("--url", default="ws://127.0.0.1:8765")
    parser.add_argument(
        "--key-file", type=Path, help=f"file holding the API key (default: {DEFAULT_KEY_FILE})"
    )
    parser.add_argument(
        "--count", type=int, default=0, help="stop after this many bars, trades or quotes"
    )
    args = parser.parse_args()
    path = args.key_file or DEFAULT_KEY_FILE
    try:
        key = path.read_text().strip()
    except OSError as exc:
        hint = "" if args.key_file else "; `make up` writes it, or pass --key-file"
        raise ConfigError(
            f"cannot read the API key from --key-file {path}: {reason(exc)}{hint}"
        ) from exc
    asyncio.run(watch(args.url, key, args.channels, args.count))
    return 0


if __name__ == "__main__":
    run_cli(main)
