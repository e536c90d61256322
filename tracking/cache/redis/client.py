"""Redis clients from the product's URLs: one server, or a Redis Cluster.

redis-py has no URL scheme for a cluster, so the product maps its own:
``redis+cluster://[user:password@]host:port[,host:port...]`` (and
``rediss+cluster://`` for TLS) gives a :class:`redis.cluster.RedisCluster`
seeded with every listed node (it discovers the rest itself); any other
URL (``redis://``, ``rediss://``, ``unix://``) a plain :class:`redis.Redis`.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster

from tracking.errors import TrackingValueError

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def _host_port(item: str, url: str) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise TrackingValueError(f"{url!r}: every cluster node must be host:port, got {item!r}")
    return host.strip("[]"), int(port)


def cluster_from_url(url: str) -> RedisCluster:
    """A :class:`RedisCluster` for a ``redis+cluster://`` / ``rediss+cluster://`` URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in CLUSTER_SCHEMES:
        raise TrackingValueError(f"not a Redis Cluster URL: {url!r}")
    if parts.path not in ("", "/", "/0") or parts.query:
        raise TrackingValueError(
            f"{url!r}: a Redis Cluster has only database 0 and takes no URL options"
        )
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = [
        ClusterNode(*_host_port(item, url))  # type: ignore[no-untyped-call]
        for item in hosts.split(",")
        if item
    ]
    if not nodes:
        raise TrackingValueError(f"{url!r}: no cluster node given")
    return RedisCluster(
        startup_nodes=nodes,
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=parts.scheme.lower().startswith("rediss"),
        socket_connect_timeout=5.0,
        socket_timeout=30.0,
    )


def client_from_url(url: str) -> redis.Redis | RedisCluster:
    """A client for ``url``: a cluster for the cluster schemes, else one server."""
    if is_cluster_url(url):
        return cluster_from_url(url)
    return redis.Redis.from_url(url)
