"""What a bot imports: the event models, the wire format and the publishers.

Needs only pydantic and redis; never imports the worker. The names below load on
first use, so that ``contracts.vocabulary`` (standard library only) can be imported
by the worker's write process without loading the models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contracts.errors import NoWorkerError, PublishError, TradescribeError
    from contracts.events import (
        DEFAULT_STREAM,
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
    from contracts.vocabulary import EVENT_TYPES

_WHERE = {
    "NoWorkerError": "contracts.errors",
    "PublishError": "contracts.errors",
    "TradescribeError": "contracts.errors",
    "DEFAULT_STREAM": "contracts.events",
    "EVENT_TYPES": "contracts.vocabulary",
    "WIRE_FIELD": "contracts.events",
    "AnyEvent": "contracts.events",
    "Envelope": "contracts.events",
    "build_event": "contracts.events",
    "parse_event": "contracts.events",
    "to_wire": "contracts.events",
    "new_event_id": "contracts.ids",
    "stable_event_id": "contracts.ids",
    "AsyncPublisher": "contracts.publisher",
    "Publisher": "contracts.publisher",
    "SpoolStatus": "contracts.spool",
}
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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'contracts' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
