"""What every command line does the same way: logging to stderr, one line there for an expected
failure, one table of exit statuses, and quick checks that the broker and database answer.

    0    done
    1    ran but failed: Kafka did not acknowledge everything, a topic is missing, the
         database failed mid-operation, the gateway closed the stream
    2    cannot start: a bad setting or argument, a missing file, a refused key, a taken port,
         or a broker, database or gateway that cannot be reached
    3    `python -m connectors run` only: finished, but some rows were dead-lettered
    130  interrupted (Ctrl-C)

Unreachable services get 2 with bad settings because the remedy is the same (fix the address or
start the service, then run again) and because it is what a connector has always answered.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Callable
from typing import Final, NoReturn

from shared.errors import ConfigError, FatalError, MarketstreamError, UnreachableError

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

CONNECT_TIMEOUT_S: Final = 3


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr, one line per record; only entry points call this."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors raise ConfigError, so that `run_cli` reports them on one line."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def exit_status(exc: MarketstreamError) -> int:
    """Map an error to the exit status of the table above."""
    if isinstance(exc, ConfigError | FatalError | UnreachableError):
        return EXIT_USAGE
    return EXIT_FAILURE


def fail(message: object) -> None:
    """Print `message` to stderr as one line, prefixed `error: `."""
    text = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"error: {text}", file=sys.stderr, flush=True)


def run_cli(main: Callable[[], int]) -> NoReturn:
    """Run an entry point and exit with its status; expected failures become one line on stderr.

    A MarketstreamError or an OSError about a file is expected; anything else is a bug and keeps
    its traceback.
    """
    try:
        status = main()
    except MarketstreamError as exc:
        fail(exc)
        status = exit_status(exc)
    except OSError as exc:
        if exc.filename is None:
            raise
        fail(f"{exc.filename}: {exc.strerror or exc}")
        status = EXIT_USAGE
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    sys.exit(status)


def reason(exc: BaseException) -> str:
    """The short cause of a failure, e.g. `Connection refused`: the first line of its message."""
    text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def require_broker(bootstrap: str, source: str = "MS_KAFKA_BOOTSTRAP") -> None:
    """Raise UnreachableError naming `source` unless a bootstrap server accepts connections.

    librdkafka retries an unreachable broker until each call's timeout, logging every attempt
    to stderr; a TCP connect first answers at once, on one line.
    """
    problems = []
    for server in (s.strip() for s in bootstrap.split(",") if s.strip()):
        host, _, port = server.rpartition("://")[2].rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S):
                return
        except (OSError, ValueError) as exc:
            problems.append(f"{server}: {reason(exc)}")
    raise UnreachableError(
        f"cannot reach the broker at {source}={bootstrap} ({'; '.join(problems) or 'no address'})"
    )


def require_database(url: str, source: str = "MS_DATABASE_URL") -> None:
    """Raise UnreachableError naming `source` unless a connection to `url` opens.

    The message shows host, port and database name only, never the password.
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg.Error as exc:
        try:
            parts = conninfo_to_dict(url)
            where = f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"
        except psycopg.Error:
            where = "an unparsable URL"
        raise UnreachableError(
            f"cannot connect to the database at {source} ({where}): {reason(exc)}"
        ) from exc
