"""Redis key names derived from a stream, each in the stream's hash slot.

On a Redis Cluster a key's slot comes from its hash tag, the first ``{...}`` in its
name, or from the whole name when it has none. Every key tradescribe keeps for a
stream and group (the writer lease, the attempts hash, the heartbeat) embeds the
stream's name so as to land in the stream's slot, on the shard that holds the
stream:

- a stream with a tag (``tradescribe:events:{3}``) is embedded as it is, and the
  key inherits the tag: ``tradescribe:lease:tradescribe:events:{3}:tradescribe``;
- a stream without one (``tradescribe:events``) is embedded in braces, which makes
  its whole name the tag, hashed as the stream itself is:
  ``tradescribe:lease:{tradescribe:events}:tradescribe``.

Names are the same on a single Redis and on a cluster. Only the standard library.
"""

from __future__ import annotations


def hash_tag(key: str) -> str | None:
    """The part of ``key`` that Redis Cluster hashes when not the whole key (as Redis
    finds it: from the first ``{`` to the next ``}``, when something is between)."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def in_slot_of(stream: str) -> str:
    """``stream`` as it goes into a derived key so that the key shares its slot.

    A name with a brace but no tag (``a{}b``) cannot be wrapped and is embedded as it
    is: its keys then spread over slots, which works, as no command spans two keys."""
    if hash_tag(stream) is not None or "{" in stream or "}" in stream:
        return stream
    return "{" + stream + "}"


def stream_key(kind: str, stream: str, group: str) -> str:
    """``tradescribe:<kind>:<stream>:<group>``, in the stream's slot (see above)."""
    return f"tradescribe:{kind}:{in_slot_of(stream)}:{group}"


def legacy_stream_key(kind: str, stream: str, group: str) -> str:
    """The name such a key had before cluster support (``tradescribe:<kind>:<stream>:
    <group>``, no braces added); read once, on a single Redis, to carry data over."""
    return f"tradescribe:{kind}:{stream}:{group}"
