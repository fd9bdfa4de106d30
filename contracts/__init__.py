"""What a bot imports: the event models, the wire format and the publishers.

Needs only pydantic and redis; never imports the worker.
"""

from contracts.errors import NoWorkerError, PublishError, TradescribeError
from contracts.events import (
    DEFAULT_STREAM,
    EVENT_TYPES,
    WIRE_FIELD,
    AnyEvent,
    Envelope,
    build_event,
    parse_event,
    to_wire,
)
from contracts.ids import new_event_id, stable_event_id
from contracts.publisher import AsyncPublisher, Publisher
from contracts.spool import SpoolStatus

__all__ = [
    "DEFAULT_STREAM",
    "EVENT_TYPES",
    "WIRE_FIELD",
    "AnyEvent",
    "AsyncPublisher",
    "Envelope",
    "NoWorkerError",
    "PublishError",
    "Publisher",
    "SpoolStatus",
    "TradescribeError",
    "build_event",
    "new_event_id",
    "parse_event",
    "stable_event_id",
    "to_wire",
]
