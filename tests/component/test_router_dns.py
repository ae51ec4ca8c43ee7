"""The DNS form of the target (`<id>.<ns>.svc.<domain>`): answers go through the address policy.

The resolver is replaced (no DNS query leaves the machine); connections are real, to a listener
on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from sandbox_router.metrics import RouterMetrics
from sandbox_router.routing import AddressPolicy, RouteTarget
from sandbox_router.upstream import ForbiddenTargetError, UpstreamPool


class FixedDNSLoop:
    """Delegates to the real loop but answers getaddrinfo from a table."""

    def __init__(self, loop: asyncio.AbstractEventLoop, answers: dict[str, list[str]]) -> None:
        self.loop = loop
        self.answers = answers
        self.asked: list[str] = []

    async def getaddrinfo(self, host: str, port: int, **_: object) -> list[tuple]:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
                for ip in self.answers[host]]

    def create_connection(self, *args: object, **kwargs: object):  # noqa: ANN201
        return self.loop.create_connection(*args, **kwargs)


async def _scenario(answers: list[str]) -> tuple[str, list[str]]:
    accepted: list[str] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("peername")[0])
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    name = "sbx.team.svc.cluster.local"
    loop = FixedDNSLoop(asyncio.get_running_loop(), {name: answers})
    pool = UpstreamPool(loop, AddressPolicy([ipaddress.ip_network("127.0.0.0/8")], allow_loopback=True),
                        RouterMetrics(), 8, 4.0)  # type: ignore[arg-type]
    try:
        conn = await pool.connect(RouteTarget.build("sbx", "team", name, port, False, 5.0))
        outcome = "connected"
        conn.close()
        await asyncio.sleep(0.05)
    except ForbiddenTargetError:
        outcome = "forbidden"
    finally:
        server.close()
        await server.wait_closed()
    assert loop.asked == [name]
    return outcome, accepted


def test_service_name_resolving_to_allowed_address_connects() -> None:
    assert asyncio.run(_scenario(["127.0.0.1"])) == ("connected", ["127.0.0.1"])


@pytest.mark.parametrize("answers", [["169.254.169.254"], ["10.0.0.1"], ["0.0.0.0"], ["224.0.0.1", "::"]])
def test_service_name_resolving_only_to_refused_addresses_is_not_connected(answers: list[str]) -> None:
    assert asyncio.run(_scenario(answers)) == ("forbidden", [])


def test_refused_answers_are_skipped_for_an_allowed_one() -> None:
    assert asyncio.run(_scenario(["169.254.169.254", "127.0.0.1"])) == ("connected", ["127.0.0.1"])
