"""The dry run's simulation (dryrun.py), without etcd: recorded writes judged and laid over
what etcd answers, fake leases, and keepalives that never leave the process."""

from __future__ import annotations

import pytest

from etcd_registrar.dryrun import DryRunEtcd, Overlay
from etcd_registrar.etcd import ABSENT, KV, DeleteOp, EtcdConfig, LeaseInfo, Op, PutOp

K = "/services/goods/a"
OURS, THEIRS = 7, 8
AT_K = {"ours": KV(K, "ours", OURS, 5), "theirs": KV(K, "theirs", THEIRS, 5)}
UNLEASED = KV(K, "hand-written", 0, 5)


@pytest.mark.parametrize(
    ("actual", "op", "applied"),
    [
        pytest.param(None, PutOp(K, "v", OURS, ABSENT), True, id="put-where-absent"),
        pytest.param(AT_K["theirs"], PutOp(K, "v", OURS, ABSENT), False, id="put-where-taken"),
        pytest.param(UNLEASED, PutOp(K, "v", OURS, ABSENT), False, id="put-where-unleased"),
        pytest.param(AT_K["ours"], PutOp(K, "v", OURS, OURS), True, id="put-over-ours"),
        pytest.param(AT_K["theirs"], PutOp(K, "v", OURS, OURS), False, id="put-over-theirs"),
        pytest.param(None, PutOp(K, "v", OURS, OURS), False, id="put-over-ours-gone"),
        pytest.param(AT_K["theirs"], PutOp(K, "v"), True, id="unguarded-put"),
        pytest.param(AT_K["ours"], DeleteOp(K, OURS), True, id="delete-ours"),
        pytest.param(AT_K["theirs"], DeleteOp(K, OURS), False, id="delete-theirs"),
        pytest.param(AT_K["theirs"], DeleteOp(K), True, id="unguarded-delete"),
    ],
)
def test_guards_are_judged_as_etcd_judges_them(actual: KV | None, op: Op, applied: bool) -> None:
    overlay = Overlay()
    refused = overlay.apply([op], {K: actual} if actual else {})
    if applied:
        assert refused == {}
        expected = KV(K, "v", op.lease, 0) if isinstance(op, PutOp) else None
        assert overlay.many([K], {K: actual} if actual else {}).get(K) == expected
    else:  # refused with what holds the key, and nothing recorded
        assert refused == {0: actual}
        assert K not in overlay.keys


def test_reads_see_the_recorded_writes_over_what_etcd_holds() -> None:
    overlay = Overlay()
    lease = overlay.grant(10)
    etcd_has = [KV("/s/a", "old", OURS, 3), KV("/s/b", "b", OURS, 3), KV("/t/x", "x", 0, 3)]
    actual = {kv.key: kv for kv in etcd_has}
    ops: list[Op] = [PutOp("/s/a", "new", lease), DeleteOp("/s/b"), PutOp("/s/c", "c", lease)]
    overlay.apply(ops, {k: kv for k, kv in actual.items() if k.startswith("/s/")})
    assert overlay.many(["/s/a", "/s/b", "/s/c", "/t/x"], actual) == {
        "/s/a": KV("/s/a", "new", lease, 0),
        "/s/c": KV("/s/c", "c", lease, 0),
        "/t/x": actual["/t/x"],
    }
    under_s = overlay.prefix("/s/", etcd_has[:2])  # etcd's answer to the prefix read
    assert [(kv.key, kv.value) for kv in under_s] == [("/s/a", "new"), ("/s/c", "c")]


def test_fake_leases_are_negative_and_alive_with_their_recorded_keys() -> None:
    overlay = Overlay()
    first, second = overlay.grant(10), overlay.grant(30)
    assert first < 0 and second < 0 and first != second  # never an id etcd grants
    overlay.apply([PutOp("/s/a", "a", first), PutOp("/s/b", "b", second)], {})
    info = overlay.lease_info(first, LeaseInfo(10, 10, []))
    assert info.alive and info.keys == ["/s/a"]
    overlay.revoke(first)
    assert not overlay.lease_info(first, LeaseInfo(10, 10, [])).alive
    assert overlay.many(["/s/a", "/s/b"], {}).keys() == {"/s/b"}  # went with its lease


def test_a_real_lease_shows_the_keys_the_dry_run_moved_on_and_off_it() -> None:
    overlay = Overlay()
    etcd_has = {"/s/a": KV("/s/a", "a", OURS, 3)}
    overlay.apply([DeleteOp("/s/a", OURS), PutOp("/s/c", "c", OURS, ABSENT)], etcd_has)
    info = overlay.lease_info(OURS, LeaseInfo(4, 10, ["/s/a", "/s/b"]))
    assert (info.ttl, info.granted, sorted(info.keys)) == (4, 10, ["/s/b", "/s/c"])


async def test_keepalives_are_answered_here_and_never_sent() -> None:
    """A dry run sharing an owner id with a live operator must not keep its leases alive:
    no stream to etcd is opened (this client is not even connected) and each keepalive is
    answered in the process."""
    etcd = DryRunEtcd(EtcdConfig())
    granted = await etcd.grant(10)
    stream = await etcd.keepalive_stream()
    for lease in (granted, OURS):
        await stream.send(lease)
    assert [await stream.receive(), await stream.receive()] == [(granted, 10), (OURS, 1)]
    await etcd.revoke(granted)
    await stream.send(granted)
    assert await stream.receive() == (granted, 0)  # as etcd answers a lease it no longer has
    info = await etcd.time_to_live(await etcd.grant(5))  # answered without etcd too
    assert info.alive and info.granted == 5
    assert not etcd._members  # nothing connected to etcd


def test_a_long_dry_run_with_pod_churn_remembers_only_where_it_differs_from_etcd() -> None:
    """R2-11: keys put and deleted again leave nothing behind, nor does a lease granted and
    revoked; a tombstone over etcd's key stays until etcd lacks the key too, and a revoked
    lease of etcd's until etcd has it no more."""
    overlay = Overlay()
    for n in range(1000):
        lease = overlay.grant(10)
        key = f"/s/pod-{n}"
        overlay.apply([PutOp(key, "v", lease, ABSENT)], {})
        overlay.apply([DeleteOp(key, lease)], {})  # etcd never had it
        overlay.revoke(lease)
        assert overlay.keepalive(lease) == 0
        assert not overlay.lease_info(lease, LeaseInfo(-1, 0, [])).alive
    assert overlay.keys == {} and overlay.revoked == set() and overlay.granted == {}

    theirs = {K: AT_K["ours"]}  # etcd holds it: the dry run's delete must hide it
    overlay.apply([DeleteOp(K, OURS)], theirs)
    assert overlay.many([K], theirs) == {} and K in overlay.keys
    assert overlay.many([K], {}) == {} and K not in overlay.keys  # etcd deleted it too
    overlay.apply([DeleteOp(K, OURS)], theirs)
    assert overlay.prefix("/services/", []) == [] and K not in overlay.keys

    overlay.revoke(OURS)  # etcd's lease: its keys in etcd vanish from the dry run's view
    assert overlay.many([K], theirs) == {} and overlay.keepalive(OURS) == 0
    assert not overlay.lease_info(OURS, LeaseInfo(-1, 0, [])).alive
    assert overlay.revoked == set()
