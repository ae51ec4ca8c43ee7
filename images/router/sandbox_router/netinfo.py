"""Discovery of the router's own non-loopback addresses, read from the kernel (no DNS lookups).

The router refuses to proxy to its own addresses so a crafted X-Sandbox-Pod-IP cannot make it
call itself (or anything else listening in its network namespace).
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

_SIOCGIFADDR = 0x8915


def _ipv4_addresses() -> set[str]:
    found: set[str] = set()
    try:
        interfaces = socket.if_nameindex()
    except OSError:
        return found
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _index, name in interfaces:
            try:
                packed = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue  # interface without an IPv4 address
            found.add(socket.inet_ntoa(packed[20:24]))
    return found


def _ipv6_addresses() -> set[str]:
    found: set[str] = set()
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as table:
            for line in table:
                hex_address = line.split()[0]
                found.add(str(ipaddress.IPv6Address(bytes.fromhex(hex_address))))
    except (OSError, ValueError, IndexError):
        pass
    return found


def local_addresses() -> tuple[str, ...]:
    """Return this host's (or pod's) interface addresses, loopback excluded."""
    addresses = _ipv4_addresses() | _ipv6_addresses()
    return tuple(sorted(a for a in addresses if not ipaddress.ip_address(a).is_loopback))
