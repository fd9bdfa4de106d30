"""Redis URLs as people may see them (never with the password), and cluster URLs.

A Redis Cluster is named by ``redis+cluster://[user:password@]host:port[,host:port...]``
(``rediss+cluster://`` for TLS): the hosts are startup nodes, any one that answers is
enough, and the client learns the rest of the cluster from it. A cluster has only
database 0, so the URL names no other.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)


def mask_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in it (for a client built in memory, never for display).

    Raises ValueError if ``url`` already holds a password."""
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    if ":" in user:
        raise ValueError("the Redis password is given twice: in the URL and as a setting")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def cluster_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A cluster URL as the plain URL of its first node (credentials, TLS and query
    kept) and the other startup nodes. Raises ValueError, in one line, for a URL that
    names no node, a port that is not a number, or a database other than 0."""
    scheme, _, rest = url.partition("+cluster://")
    parts = urlsplit(f"{scheme}://{rest}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for host in hosts.split(","):
        name, colon, port = host.strip().rpartition(":")
        if not colon or not name or not port.isdigit():
            raise ValueError(
                f"cluster node {host.strip()!r} is not host:port "
                "(redis+cluster://host:port[,host:port...])"
            )
        nodes.append((name.strip("[]"), int(port)))
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has database 0 only: drop the /N from the URL")
    first = f"{nodes[0][0]}:{nodes[0][1]}"
    netloc = f"{userinfo}@{first}" if at else first
    return urlunsplit(parts._replace(netloc=netloc, path="")), nodes[1:]


def check_redis_url(url: str) -> None:
    """Raise ValueError (one line, no password) unless ``url`` is one tradescribe takes."""
    if not url.startswith(REDIS_SCHEMES):
        raise ValueError(
            "must start with redis://, rediss:// (TLS), unix:// or redis+cluster:// "
            "(rediss+cluster:// for a TLS cluster)"
        )
    if is_cluster_url(url):
        cluster_nodes(url)
