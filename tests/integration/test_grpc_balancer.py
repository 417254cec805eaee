"""etcd-naming values as the operator renders them, read by a real grpc-go client.

tests/consumers/cmd/grpc-balancer resolves through etcd's naming resolver into grpc-go's
round_robin balancer, whose SubConns dial real gRPC servers the program starts itself, and
prints which of them answer. The etcd 3.5 resolver hands a value's ``Metadata`` to grpc-go
as ``resolver.Address.Metadata``, and grpc-go 1.71 compares those with ``==``: a JSON object
or array there panicked it (etcd-io/etcd#19700, grpc/grpc-go#8225), so the operator renders
``Metadata`` as null. The client runs at the versions tests/consumers/go.mod pins and, built
from grpc171.mod, at grpc-go 1.71.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from etcd_registrar.etcd import Etcd, EtcdConfig
from etcd_registrar.formats import build_layout
from tests.consumers.runner import ConsumerProcess
from tests.harness import EtcdServer, ToolchainMissing, wait_for

pytestmark = pytest.mark.integration

SERVICE = "goods"
TIMEOUT = 15.0


@pytest.fixture(
    params=[
        pytest.param(None, id="pinned"),
        pytest.param("grpc171", id="grpc-go-1.71"),  # panicked on the Metadata object
    ]
)
def client(request: pytest.FixtureRequest, etcd_server: EtcdServer) -> Iterator[ConsumerProcess]:
    try:
        process = ConsumerProcess(
            "grpc-balancer",
            f"-etcd={etcd_server.endpoint}",
            f"-target=etcd:////services/{SERVICE}",
            "-servers=3",
            build=request.param,
        )
    except ToolchainMissing as exc:
        missing = str(exc)
        pytest.fail(missing, pytrace=False)
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def etcd(etcd_server: EtcdServer) -> AsyncIterator[Etcd]:
    client = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,)))
    yield client
    await client.close()


def answering(client: ConsumerProcess, wanted: list[str]) -> None:
    """Wait until exactly `wanted` answer the client's round-robin calls (and it lives)."""

    def settled() -> bool:
        try:
            client.check_running()
        except AssertionError:
            return True  # exited (a panic): check_running below fails with its log
        seen = client.latest().get("round_robin")
        return seen is not None and seen.endpoints == frozenset(wanted)

    wait_for(settled, TIMEOUT, message=f"round_robin reaches exactly {wanted}")
    client.check_running()


async def test_round_robin_dials_what_the_operator_registers(
    client: ConsumerProcess, etcd: Etcd
) -> None:
    servers = sorted(
        wait_for(lambda: client.latest().get("servers"), TIMEOUT, message="servers up").endpoints
    )

    async def register(address: str, metadata: dict[str, str]) -> str:
        layout = build_layout(
            format="etcd-naming",
            prefix=None,
            key=None,
            value=None,
            scheme="grpc",
            zone="cluster.local",
            ttl=10,
            metadata=metadata,
        )
        ip, port = address.rsplit(":", 1)
        key, value = layout.render(
            {
                "service": SERVICE,
                "namespace": "shop",
                "pod": f"pod-{port}",
                "uid": f"uid-{port}",
                "node": "node-1",
                "ip": ip,
                "port": int(port),
                "metadata": {},
            }
        )
        await etcd.put(key, value)
        return key

    first = [await register(address, {"version": "v1"}) for address in servers[:2]]
    await asyncio.to_thread(answering, client, servers[:2])
    await register(servers[2], {"version": "v1"})
    await register(servers[1], {"version": "v2"})  # a pod's metadata annotation changed
    await asyncio.to_thread(answering, client, servers)
    await etcd.delete(first[0])
    await asyncio.to_thread(answering, client, servers[1:])
