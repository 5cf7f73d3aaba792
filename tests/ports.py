"""Ports for servers the tests start, chosen where the kernel never picks a connection's source port.

``bind(0)`` hands out a port from the ephemeral range, the same range the kernel draws source ports
of outgoing connections from. Between the probe releasing the port and the server under test binding
it, any connection the suite opens (hundreds: RabbitMQ, Redis, HTTP) may take it, and the server then
fails with EADDRINUSE. Ports below that range are taken only by listeners.
"""

from __future__ import annotations

import random
import socket


def ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive ports that are free now, all below the ephemeral range."""
    low = ephemeral_low()
    for first in random.sample(range(10000, low - count), 200):
        probes = [socket.socket() for _ in range(count)]
        try:
            for offset, probe in enumerate(probes):
                probe.bind(("127.0.0.1", first + offset))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return first
    raise RuntimeError(f"no {count} free consecutive port(s) between 10000 and {low}")
