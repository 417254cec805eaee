"""The lease pool (leases.py), without etcd: where the owner's records live, how a record is
read (trusting nothing in it), and how keys are packed onto leases."""

from __future__ import annotations

import json

import pytest

from etcd_registrar.etcd import KV, Etcd, EtcdConfig
from etcd_registrar.leases import Lease, LeasePool, lease_records, owner_keys, read_record
from etcd_registrar.source import Pool
from etcd_registrar.term import Term

PREFIX = lease_records("t")
LEASE = 0x1F
GOOD = {"namespace": "shop", "service": "goods", "ttl": 10}


def test_records_live_under_the_owners_reserved_prefix() -> None:
    assert owner_keys("t") == "/etcd-registrar/t/"
    assert PREFIX == "/etcd-registrar/t/leases/"


def record(value: object, *, key: str = f"{PREFIX}1f", lease: int = LEASE) -> KV:
    return KV(key, value if isinstance(value, str) else json.dumps(value), lease, 1)


def test_a_record_we_wrote_names_its_pool() -> None:
    pool = read_record(record(GOOD), PREFIX)
    assert pool == Pool("shop", "goods", 10)
    assert (pool.namespace, pool.service, pool.ttl) == ("shop", "goods", 10)
    assert read_record(record({**GOOD, "cluster": "uid-a"}), PREFIX) == pool  # names its cluster


@pytest.mark.parametrize(
    ("kv", "error"),
    [
        pytest.param(record(GOOD, lease=0), "not attached", id="no-lease"),
        pytest.param(record(GOOD, lease=-1), "not attached", id="negative-lease"),
        pytest.param(record(GOOD, key=f"{PREFIX}20"), "not attached", id="other-leases-name"),
        pytest.param(record(GOOD, key=f"{PREFIX}extra"), "not attached", id="not-a-lease-id"),
        pytest.param(record("10.0.0.1:80"), "is not {namespace", id="not-json"),
        pytest.param(record("[" * 5000 + "]" * 5000), "is not {namespace", id="deep-json"),
        pytest.param(record({**GOOD, "keys": 1}), "is not {namespace", id="extra-field"),
        pytest.param(record({"namespace": "shop", "ttl": 10}), "is not {", id="missing-field"),
        pytest.param(record({**GOOD, "namespace": "x" * 1100}), "is not {", id="oversized"),
        pytest.param(record({**GOOD, "namespace": 1}), "must be strings", id="namespace-int"),
        pytest.param(record({**GOOD, "service": None}), "must be strings", id="service-null"),
        pytest.param(record({**GOOD, "ttl": 1e999}), "ttl", id="infinite-ttl"),
        pytest.param(record({**GOOD, "ttl": 10.0}), "ttl", id="float-ttl"),
        pytest.param(record({**GOOD, "ttl": True}), "ttl", id="bool-ttl"),
        pytest.param(record({**GOOD, "ttl": 1}), "ttl", id="ttl-below-min"),
        pytest.param(record({**GOOD, "ttl": 3601}), "ttl", id="ttl-above-max"),
        pytest.param(record({**GOOD, "cluster": 1}), "cluster", id="cluster-int"),
    ],
)
def test_a_record_we_did_not_write_is_refused(kv: KV, error: str) -> None:
    """Records live under a prefix a tenant could once write to (issue #10)."""
    with pytest.raises(ValueError, match="record") as refused:
        read_record(kv, PREFIX)
    assert error in str(refused.value)


GOODS, CARTS = Pool("shop", "goods", 10), Pool("shop", "carts", 10)


def pool_of_leases(*leases: Lease, keys_per_lease: int = 2) -> LeasePool:
    pool = LeasePool(
        Etcd(EtcdConfig()),  # never connected
        "t",
        keys_per_lease=keys_per_lease,
        term=Term.alone(),
        on_lost=lambda lease: None,
    )
    pool.by_id = {lease.id: lease for lease in leases}
    return pool


@pytest.mark.parametrize(
    ("leases", "pool", "key", "chosen"),
    [
        pytest.param([Lease(1, GOODS, {"a"})], GOODS, "a", 1, id="the-lease-it-is-on"),
        pytest.param([Lease(1, GOODS, {"a"})], GOODS, "b", 1, id="room-left"),
        pytest.param(
            [Lease(1, GOODS, {"a", "b"}), Lease(2, GOODS, set())], GOODS, "c", 2, id="first-full"
        ),
        pytest.param(
            [Lease(1, CARTS, set()), Lease(2, GOODS, set())], GOODS, "c", 2, id="its-own-pool"
        ),
        pytest.param(
            [Lease(1, Pool("shop", "goods", 30), set()), Lease(2, GOODS, set())],
            GOODS,
            "c",
            2,
            id="its-own-ttl",
        ),
    ],
)
async def test_a_key_goes_on_a_lease_of_its_pool_with_room(
    leases: list[Lease], pool: Pool, key: str, chosen: int
) -> None:
    lease_pool = pool_of_leases(*leases)
    assert await lease_pool.with_room(pool, key) == chosen
    assert key in lease_pool.by_id[chosen].keys  # the slot is taken at once: no overfilled batch
    assert lease_pool.by_id[chosen].empty_since is None


def test_a_write_leaving_flight_frees_only_the_slots_it_did_not_land_on() -> None:
    held, reserved = Lease(1, GOODS, {"a"}), Lease(2, GOODS, {"a"})
    pool = pool_of_leases(held, reserved)
    pool.unreserve("a", held_on=1)
    assert (held.keys, reserved.keys) == ({"a"}, set())
    pool.unreserve("a", held_on=None)
    assert held.keys == set()
    # both are empty now: granted for a write that never landed, they must be retired too
    assert held.empty_since is not None and reserved.empty_since is not None


def test_a_lease_left_without_keys_starts_its_grace() -> None:
    lease = Lease(1, GOODS, {"a", "b"})
    pool = pool_of_leases(lease)
    grace_started = []  # read through a list: mypy would narrow the attribute across calls
    for free in ("a", "b"):
        pool.free(1, free)
        grace_started.append(lease.empty_since is not None)
    assert grace_started == [False, True]
    assert pool.take(1, "c") and lease.empty_since is None
    assert not pool.take(9, "c")  # a lease we no longer have
