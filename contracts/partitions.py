"""Stream partitions: which stream an event goes to when the load is split.

With ``partitions`` K > 1, an event goes to ``<stream>:{p}``, p = a stable hash of its
``source`` modulo K, so that one bot's events stay in one stream (their order kept)
and each partition can have its own worker. The braces are a Redis Cluster hash tag:
the K streams spread over the cluster's slots, and every key that belongs to one
partition (its lease, its attempts) carries the same tag, so it sits beside its stream.
With K = 1 (the default) the stream is ``<stream>`` itself, as before partitions.
"""

from __future__ import annotations

import json
import zlib

MAX_PARTITIONS = 1024


def partition_of(source: str, partitions: int) -> int:
    """The partition of a source: CRC-32 of its UTF-8 bytes modulo ``partitions``
    (stable across processes and versions, unlike Python's salted ``hash``)."""
    return zlib.crc32(source.encode()) % partitions


def partition_stream(stream: str, partition: int) -> str:
    """The stream key of one partition: ``tradescribe:events:{3}``."""
    return f"{stream}:{{{partition}}}"


def partition_streams(stream: str, partitions: int) -> list[str]:
    """Every stream a worker reads: ``[stream]`` when not partitioned."""
    if partitions == 1:
        return [stream]
    return [partition_stream(stream, p) for p in range(partitions)]


def stream_for(stream: str, source: str, partitions: int) -> str:
    """The stream an event of ``source`` goes to."""
    if partitions == 1:
        return stream
    return partition_stream(stream, partition_of(source, partitions))


def stream_for_wire(stream: str, wire: str | bytes, partitions: int) -> str:
    """The stream of an event already in wire JSON (a spooled line, a replayed dead
    letter); a line that is not an object with a text source goes to partition 0, where
    the worker dead-letters it as it would anywhere."""
    if partitions == 1:
        return stream
    try:
        source = json.loads(wire).get("source")
    except (ValueError, AttributeError):
        source = None
    if not isinstance(source, str):
        return partition_stream(stream, 0)
    return stream_for(stream, source, partitions)


def check_partitions(partitions: int) -> int:
    """``partitions`` if it is a usable count, else ValueError naming the range."""
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise ValueError(f"partitions must be a whole number, not {partitions!r}")
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be between 1 and {MAX_PARTITIONS}, not {partitions}")
    return partitions
