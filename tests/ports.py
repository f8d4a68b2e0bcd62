"""Ports for the servers the tests start, shared by the integration tests and the
chaos suite."""

from __future__ import annotations

import random
import socket

_PORTS = random.Random()


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1, chosen below the kernel's
    ephemeral range (32768 and up), so that no outgoing connection (Kafka and
    PostgreSQL clients open many) takes it between this check and the service's bind."""
    while True:
        port = _PORTS.randrange(20000, 32000)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        ):
            try:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
