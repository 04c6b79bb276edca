"""Serving a dashboard with uvicorn (`gendurable web`)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn

from .dashboard import Dashboard


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port` (port 0: any free port). Raises `OSError`."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(
    dashboard: Dashboard, sock: socket.socket, *, ready: Callable[[], None] | None = None
) -> None:
    """Serve `dashboard` on the listening `sock` until SIGINT or SIGTERM.

    `ready` is called once the socket accepts connections (it listens already, so a
    client may connect from then on). The dashboard's pool is closed on the way out.
    """
    config = uvicorn.Config(
        dashboard, log_level="warning", lifespan="on", access_log=False, server_header=False
    )
    server = uvicorn.Server(config)
    if ready is not None:
        ready()
    await server.serve(sockets=[sock])
