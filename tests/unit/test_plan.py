"""Plan (docs/crd.md#conditions): desired vs held keys -> puts, deletes, conflicts."""

from __future__ import annotations

import pytest

from etcd_registrar.plan import Conflict, Current, Plan, plan
from etcd_registrar.source import Endpoint, Pool, pool_of
from tests.unit.builders import endpoint

K = "/services/goods/a"
OURS = Pool("shop", "goods", 10)
OLD = "2024-01-01T00:00:00Z"
NEW = "2024-02-01T00:00:00Z"
A = endpoint(K, pod="goods-a")
B_OLDER = endpoint(K, pod="goods-b", value="10.0.0.6:8080", created=OLD)
C_NEWER = endpoint(K, pod="goods-c", value="10.0.0.7:8080", created=NEW)
D_NEWER = endpoint(K, pod="goods-d", value="10.0.0.8:8080", created=NEW)
A_TTL30 = endpoint(K, pod="goods-a", ttl=30)

Claims = dict[str, list[Endpoint]]
Held = dict[str, Current]


@pytest.mark.parametrize(
    ("claims", "current", "puts", "deletes", "conflicts"),
    [
        pytest.param({K: [A]}, {}, [A], [], [], id="new-key"),
        pytest.param({K: [A]}, {K: Current(A.value, OURS)}, [], [], [], id="in-sync"),
        pytest.param({K: [A]}, {K: Current("10.9.9.9:1", OURS)}, [A], [], [], id="changed"),
        pytest.param({}, {K: Current(A.value, OURS)}, [], [K], [], id="orphan-ours"),
        pytest.param({K: []}, {K: Current(A.value, OURS)}, [], [K], [], id="claims-emptied"),
        pytest.param({}, {K: Current(A.value, None)}, [], [], [], id="other-writer-untouched"),
        pytest.param(
            {K: [A]}, {K: Current("10.9.9.9:1", None)}, [], [], [], id="other-writer-kept"
        ),
        pytest.param(
            {K: [A_TTL30]}, {K: Current(A.value, OURS)}, [A_TTL30], [], [], id="ttl-change"
        ),
        pytest.param(
            {K: [C_NEWER, B_OLDER]},
            {},
            [B_OLDER],
            [],
            [Conflict(K, B_OLDER, (C_NEWER,))],
            id="oldest-wins",
        ),
        pytest.param(
            {K: [C_NEWER, B_OLDER]},
            {K: Current(B_OLDER.value, OURS)},
            [],
            [],
            [Conflict(K, B_OLDER, (C_NEWER,))],
            id="conflict-winner-in-sync",
        ),
        pytest.param(
            {K: [D_NEWER, C_NEWER, B_OLDER]},
            {K: Current(C_NEWER.value, OURS)},
            [B_OLDER],
            [],
            [Conflict(K, B_OLDER, (C_NEWER, D_NEWER))],
            id="three-claimants-loser-held",
        ),
        pytest.param(
            {K: [D_NEWER, C_NEWER]},
            {},
            [C_NEWER],
            [],
            [Conflict(K, C_NEWER, (D_NEWER,))],
            id="same-age-by-name",
        ),
    ],
)
def test_plan(
    claims: Claims,
    current: Held,
    puts: list[Endpoint],
    deletes: list[str],
    conflicts: list[Conflict],
) -> None:
    by_uid = {k: {e.pod_uid: e for e in v} for k, v in claims.items()}
    result = plan(sorted({*claims, *current}), by_uid, current)
    assert (result.puts, result.deletes, result.conflicts) == (puts, deletes, conflicts)
    assert bool(result) is bool(puts or deletes)


def test_plan_only_looks_at_the_given_keys() -> None:
    other = "/services/goods/z"
    current = {K: Current("x", OURS), other: Current("x", OURS)}
    result = plan([other], {K: {A.pod_uid: A}}, current)
    assert (result.puts, result.deletes) == ([], [other])


def test_pool_of() -> None:
    assert pool_of(A_TTL30) == ("shop", "goods", 30)


def test_plan_of_only_conflicts_is_falsy() -> None:
    assert not Plan(conflicts=[Conflict(K, A, (C_NEWER,))])


def test_tie_on_creation_time_keeps_the_current_holder() -> None:
    """Pods created in the same second: the key does not flip to the newcomer."""
    holder = endpoint(K, pod="zz-holder", value="10.0.0.2:80")
    newcomer = endpoint(K, pod="aa-new", value="10.0.0.1:80")
    claims = {K: {holder.pod_uid: holder, newcomer.pod_uid: newcomer}}
    result = plan([K], claims, {K: Current(holder.value, pool_of(holder))})
    assert result.puts == []
    assert [c.winner for c in result.conflicts] == [holder]


@pytest.mark.parametrize(
    ("value", "why"),
    [("10.9.9.9:1", "another value"), (A.value, "even the same value")],
)
def test_wanted_key_of_another_writer_is_taken_not_overwritten(value: str, why: str) -> None:
    result = plan([K], {K: {A.pod_uid: A}}, {K: Current(value, None)})
    assert (result.puts, result.deletes, result.taken) == ([], [], [A]), why
