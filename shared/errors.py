"""The error hierarchy: every marketstream error says whether retrying can help."""

from __future__ import annotations

from typing import ClassVar


class MarketstreamError(Exception):
    """Base of all marketstream errors."""

    retriable: ClassVar[bool] = False


class ConfigError(MarketstreamError):
    """A setting is missing or invalid; raised at start, naming the variable."""


class DecodeError(MarketstreamError):
    """Bytes from Kafka are not a message we can read; the input goes to the dead-letter topic
    with `reason`."""

    reason = "undecodable"


class SyntheticDataError(DecodeError):
    """A message from a synthetic source (the simulator) where only real data may flow
    (MS_REAL_DATA_ONLY=true)."""

    reason = "synthetic_source"


class TransientError(MarketstreamError):
    """A provider or service failed in a way that reconnecting may cure."""

    retriable = True


class FatalError(MarketstreamError):
    """A provider or service failed in a way that retrying cannot cure (bad credentials, gone)."""


class DeliveryError(MarketstreamError):
    """Kafka did not acknowledge a message after the producer's own retries."""


class UnreachableError(MarketstreamError):
    """A broker, database or gateway cannot be reached at start; names what points at it."""

    retriable = True


class NotFoundError(MarketstreamError):
    """What was asked for by its id does not exist (an HTTP API answers 404)."""
