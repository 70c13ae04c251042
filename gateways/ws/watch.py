"""`python -m gateways.ws.watch`: a small client that prints bars from the gateway, for people."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import orjson
from websockets.asyncio.client import connect


async def watch(url: str, key: str, channels: list[str], count: int) -> int:
    """Subscribe, print one line per event, stop after `count` bars (0: never)."""
    seen = 0
    async with connect(url, additional_headers={"X-API-Key": key}) as ws:
        await ws.send(
            orjson.dumps({"op": "subscribe", "channels": channels, "snapshot": 3}).decode()
        )
        async for message in ws:
            for event in orjson.loads(message):
                if event["type"] == "bar":
                    b = event["bar"]
                    print(
                        f"{event['channel']:<24} seq {event['seq']:>6} rev {event['revision']}  {b['ts']}"
                        f"  O {b['open']} H {b['high']} L {b['low']} C {b['close']} V {b['volume']:g}"
                    )
                    seen += 1
                elif event["type"] == "snapshot":
                    print(
                        f"{event['channel']:<24} snapshot of {len(event['bars'])} bars as of seq {event['seq']}"
                    )
                else:
                    print(orjson.dumps(event).decode())
            if count and seen >= count:
                return seen
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m gateways.ws.watch", description=__doc__)
    parser.add_argument("channels", nargs="+", help="e.g. bars.1s.SIM0001 or bars.1m.*")
    parser.add_argument("--url", default="ws://127.0.0.1:8765")
    parser.add_argument(
        "--key-file", type=Path, help="file holding the API key (default: .run/ws-api-key)"
    )
    parser.add_argument("--count", type=int, default=0, help="stop after this many bars")
    args = parser.parse_args()
    key = (args.key_file or Path(".run/ws-api-key")).read_text().strip()
    asyncio.run(watch(args.url, key, args.channels, args.count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
