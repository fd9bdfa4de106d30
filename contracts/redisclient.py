"""The one place where Redis clients are built from a URL: a single server or a cluster.

``redis://``, ``rediss://`` and ``unix://`` give redis-py's ``Redis``;
``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` for TLS) gives its
``RedisCluster``, sync or asyncio, which routes each command to the shard holding its
key. tradescribe keeps every multi-key command within one hash slot
(``contracts.keys``), pipelines are never transactions across slots, and Lua scripts
touch one key each, so the same code runs on both.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.cluster import ClusterNode
from redis.exceptions import ClusterDownError, RedisClusterException, TryAgainError

from contracts.errors import TradescribeError
from contracts.redisurl import cluster_nodes, is_cluster_url

SyncRedis = redis.Redis | redis.RedisCluster
AsyncRedis = aredis.Redis | aredis.RedisCluster

# The cluster cannot be reached or is failing over: wait and try again, as for a
# single Redis that is away (RedisClusterException is not a RedisError; its
# "unreachable" kind, new in redis-py 8, is raised when no node answers a refresh).
try:
    from redis.exceptions import RedisClusterUnreachableError as _ClusterUnreachable
except ImportError:  # an older redis-py: any cluster exception
    _ClusterUnreachable = RedisClusterException  # type: ignore[misc,assignment]

TRANSIENT_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
    ClusterDownError,
    TryAgainError,
    _ClusterUnreachable,
)
"""Errors that mean Redis (or a shard of the cluster) is away for now: retry them."""
REDIS_ERRORS = (redis.RedisError, OSError, RedisClusterException)
"""Every error a Redis call may raise (a cluster's own are not all RedisErrors)."""


def sync_client(url: str, **options: Any) -> SyncRedis:
    """A ``redis.Redis``, or a ``redis.RedisCluster`` for a cluster URL (which reads the
    cluster's layout at once: a cluster no node of which answers raises
    ``redis.ConnectionError``, as an unreachable single Redis does on first use)."""
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    first, others = cluster_nodes(url)
    nodes = [ClusterNode(host, port) for host, port in others]  # type: ignore[no-untyped-call]
    try:
        return redis.RedisCluster.from_url(first, startup_nodes=nodes, **options)
    except RedisClusterException as exc:
        raise _connection_error(exc) from exc


def async_client(url: str, **options: Any) -> AsyncRedis:
    """A ``redis.asyncio.Redis``, or a ``redis.asyncio.RedisCluster`` for a cluster URL
    (which connects on its first command)."""
    if not is_cluster_url(url):
        return aredis.Redis.from_url(url, **options)
    first, others = cluster_nodes(url)
    nodes = [AsyncClusterNode(host, port) for host, port in others]
    if not hasattr(aredis.RedisCluster, "pubsub"):
        raise TradescribeError(
            f"redis-py {redis.__version__} has no asyncio pub/sub on a cluster, which the "
            "worker's request channel needs: pip install 'redis>=8'"
        )
    return aredis.RedisCluster.from_url(first, startup_nodes=nodes, **options)


def is_cluster(client: Any) -> bool:
    return isinstance(client, redis.RedisCluster | aredis.RedisCluster)


def publish(client: SyncRedis, channel: str, message: str) -> int:
    """PUBLISH, returning how many subscribers heard it. On a cluster the message reaches
    every node, but the count is of the receiving node's subscribers only: it is sent to
    the node holding the channel's slot, where redis-py subscribes (``pubsub()``).
    redis-py 8 routes PUBLISH there by itself; named here so as not to depend on it."""
    if isinstance(client, redis.RedisCluster):
        node = client.get_node_from_key(channel)  # type: ignore[no-untyped-call]
        return int(client.publish(channel, message, target_nodes=node))
    return int(client.publish(channel, message))


def subscribers(client: SyncRedis, channel: str) -> int:
    """How many clients subscribe to ``channel`` (on a cluster: on all its nodes)."""
    if isinstance(client, redis.RedisCluster):
        found = client.pubsub_numsub(channel, target_nodes=redis.RedisCluster.ALL_NODES)
    else:
        found = client.pubsub_numsub(channel)
    return sum(int(n) for _, n in found)


def _connection_error(exc: RedisClusterException) -> Exception:
    cause = exc.__cause__
    if isinstance(cause, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return cause
    why = cause if cause is not None else exc
    return redis.ConnectionError(f"no node of the Redis Cluster answers (last: {why})")
