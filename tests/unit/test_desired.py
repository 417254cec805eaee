"""Desired state (docs/crd.md, docs/tenancy.md): which keys each pod should hold, which registration
governs a service, which namespace may write a key range; events in, keys to plan out."""

from __future__ import annotations

from typing import Any

import pytest

from etcd_registrar.desired import DesiredState
from etcd_registrar.source import Defaults, RegistrationId, ServiceId
from etcd_registrar.tenancy import ASSIGNMENT, ClaimPolicy
from tests.unit.builders import opt_in, pod_body, registration_body

DEFAULTS = Defaults()
GOODS = ServiceId("shop", "goods")
KEY = "/services/goods/goods-abc"
VALID = {"service": "goods"}
INVALID = {"service": "goods", "key": "{prefix}/{foo}"}
SELECTING = {"selector": {"matchLabels": {"app": "goods"}}}


def registered(state: DesiredState, spec: dict[str, Any], **kwargs: Any) -> None:
    assert state.on_registration("ADDED", registration_body(spec, **kwargs)) is not None


@pytest.mark.parametrize(
    ("registrations", "governing"),
    [
        pytest.param({"b": VALID}, "b", id="only-one"),
        pytest.param({"b": VALID, "a": VALID}, "a", id="by-name"),
        pytest.param({"a": INVALID, "b": VALID}, "b", id="valid-before-invalid"),
        pytest.param({"a": INVALID}, "a", id="invalid-alone-governs"),
        pytest.param({"c": INVALID, "b": INVALID}, "b", id="invalid-by-name"),
    ],
)
@pytest.mark.parametrize("order", [1, -1], ids=["given-order", "reversed"])
def test_the_governing_registration_of_a_service(
    registrations: dict[str, dict[str, Any]], governing: str, order: int
) -> None:
    state = DesiredState(DEFAULTS)
    for name, spec in list(registrations.items())[::order]:
        registered(state, spec, name=name)
    assert state.governing[GOODS].name == governing


def test_deleting_the_governing_registration_elects_the_next() -> None:
    state = DesiredState(DEFAULTS)
    for name in ("a", "b"):
        registered(state, VALID, name=name)
    change = state.on_registration("DELETED", registration_body(VALID, name="a"))
    assert state.governing[GOODS].name == "b"
    assert change is not None
    assert change.dirty == {RegistrationId("shop", "b")}  # a is gone: no status to write


def test_an_invalid_registration_blocks_its_service_until_deleted() -> None:
    state = DesiredState(DEFAULTS)
    registered(state, INVALID)
    change = state.on_pod(None, pod_body(annotations=opt_in()))
    assert change is not None
    assert (change.after, state.claims) == (set(), {})
    deleted = state.on_registration("DELETED", registration_body(INVALID))
    assert deleted is not None
    assert deleted.keys == {KEY}  # the defaults govern the pod now
    assert set(state.claims) == {KEY}


def test_the_echo_of_a_status_patch_changes_nothing() -> None:
    state = DesiredState(DEFAULTS)
    body = registration_body(SELECTING)
    registered(state, SELECTING)
    assert state.on_registration("MODIFIED", {**body, "status": {"endpoints": 1}}) is None


def test_a_pod_not_opted_in_touches_nothing() -> None:
    state = DesiredState(DEFAULTS)
    assert state.on_pod(None, pod_body()) is None
    assert (state.claims, state.keys_by_pod, state.interest) == ({}, {}, {})
    assert state.tenancy.identities == {}
    # it is known all the same, for a registration that selects it later
    change = state.on_registration("ADDED", registration_body(SELECTING))
    assert change is not None
    assert change.keys == {KEY}


def test_the_first_to_want_a_range_claims_it_for_its_namespace() -> None:
    state = DesiredState(DEFAULTS)
    first = state.on_pod(None, pod_body(annotations=opt_in()))
    assert first is not None
    assert (first.before, first.after, first.keys) == (set(), {KEY}, {KEY})
    assert first.claims == {"/services/goods/": "shop"}
    assert first.dirty == set()  # no registration governs goods
    registration = state.on_registration("ADDED", registration_body(VALID))
    assert registration is not None
    assert registration.claims == {}  # its namespace owns the range already
    assert registration.dirty == {RegistrationId("shop", "goods")}
    second = state.on_pod(None, pod_body(name="goods-def", annotations=opt_in()))
    assert second is not None
    assert (second.claims, second.dirty) == ({}, {RegistrationId("shop", "goods")})
    assert state.claimed_in_ns["shop"] == 2


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(lambda s: s.on_pod("DELETED", pod_body(annotations=opt_in())), id="deleted"),
        pytest.param(
            lambda s: s.on_pod("MODIFIED", pod_body(ready=False, annotations=opt_in())),
            id="not-ready",
        ),
        pytest.param(lambda s: s.forget("uid-goods-abc"), id="missed-by-events"),
    ],
)
def test_a_pod_that_leaves_releases_its_keys(how: Any) -> None:
    state = DesiredState(DEFAULTS)
    assert state.on_pod(None, pod_body(annotations=opt_in())) is not None
    change = how(state)
    assert (change.before, change.after) == ({KEY}, set())
    assert KEY in change.keys  # planned again: deleted from etcd
    assert (state.claims, state.keys_by_pod) == ({}, {})
    assert state.keys_by_service[GOODS] == set()
    assert state.claimed_in_ns["shop"] == 0


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(lambda s: s.on_pod("DELETED", pod_body(annotations=opt_in())), id="deleted"),
        pytest.param(lambda s: s.forget("uid-goods-abc"), id="missed-by-events"),
    ],
)
def test_a_pod_that_is_gone_leaves_its_range(how: Any) -> None:
    """Else its namespace's claim on the range would never lapse."""
    state = DesiredState(DEFAULTS)
    state.on_pod(None, pod_body(annotations=opt_in()))
    how(state)
    assert state.interest == {}
    assert state.tenancy.identities["/services/goods/"].members == {}
    assert state.on_pod("DELETED", pod_body(name="unknown")) is None


def test_problems_are_reported_once_until_they_change() -> None:
    state = DesiredState(DEFAULTS)
    body = pod_body(annotations=opt_in(port="admin"))
    first, again = state.on_pod(None, body), state.on_pod("MODIFIED", body)
    assert first is not None and again is not None
    assert first.problems != [] and again.problems == []
    assert state.problems["uid-goods-abc"] == tuple(first.problems)
    fixed = state.on_pod("MODIFIED", pod_body(annotations=opt_in()))
    assert fixed is not None
    assert (fixed.problems, fixed.after) == ([], {KEY})
    assert "uid-goods-abc" not in state.problems


@pytest.mark.parametrize(
    ("limit", "pods", "held"),
    [
        pytest.param(3, 3, 3, id="within"),
        pytest.param(3, 5, 3, id="over"),
        pytest.param(0, 1, 0, id="none"),
    ],
)
def test_a_namespace_gets_at_most_its_quota(limit: int, pods: int, held: int) -> None:
    state = DesiredState(DEFAULTS, max_keys_per_namespace=limit)
    changes = [
        state.on_pod(None, pod_body(name=f"goods-{n}", annotations=opt_in())) for n in range(pods)
    ]
    assert len(state.claims) == held
    refused = [c for c in changes if c is not None and c.problems]
    assert len(refused) == pods - held
    assert all("--max-keys-per-namespace" in c.problems[-1] for c in refused)
    other = state.on_pod(None, pod_body(name="x", namespace="else", annotations=opt_in("x")))
    assert other is not None
    assert bool(other.after) is (limit > 0)  # the quota is per namespace


def test_the_quota_keeps_the_keys_a_pod_holds_first() -> None:
    """A pod at the limit that wants one more key keeps the one it holds, though the new
    one comes first in its render order (the annotation's service)."""
    state = DesiredState(DEFAULTS, max_keys_per_namespace=1)
    registered(state, {"service": "b", **SELECTING}, name="b")
    held = state.on_pod(None, pod_body())
    assert held is not None
    assert held.after == {"/services/b/goods-abc"}
    more = state.on_pod("MODIFIED", pod_body(annotations=opt_in("a")))
    assert more is not None
    assert more.after == {"/services/b/goods-abc"}
    assert "1 not registered" in more.problems[0]


def test_a_freed_slot_of_the_quota_is_used_again() -> None:
    state = DesiredState(DEFAULTS, max_keys_per_namespace=1)
    state.on_pod(None, pod_body(name="goods-a", annotations=opt_in()))
    waiting = pod_body(name="goods-b", annotations=opt_in())
    assert state.on_pod(None, waiting) is not None
    state.on_pod("DELETED", pod_body(name="goods-a", annotations=opt_in()))
    again = state.on_pod("MODIFIED", waiting)
    assert again is not None
    assert again.after == {"/services/goods/goods-b"}


@pytest.mark.parametrize(
    ("share_with", "admitted"),
    [
        pytest.param([], False, id="not-shared"),
        pytest.param(["team-b"], True, id="shared"),
        pytest.param(["team-c"], False, id="shared-with-another"),
    ],
)
def test_a_range_is_its_owners_unless_shared(share_with: list[str], admitted: bool) -> None:
    state = DesiredState(DEFAULTS)
    owner = state.on_registration(
        "ADDED",
        registration_body({"shareWith": share_with}, name="pay", namespace="team-a"),
    )
    assert owner is not None
    assert owner.claims == {"/services/pay/": "team-a"}
    guest = state.on_pod(None, pod_body(name="g", namespace="team-b", annotations=opt_in("pay")))
    assert guest is not None
    assert (guest.after == {"/services/pay/g"}) is admitted
    assert any("belong to namespace team-a" in p for p in guest.problems) is not admitted


def test_sharing_later_admits_the_pods_refused() -> None:
    state = DesiredState(DEFAULTS)
    registered(state, {}, name="pay", namespace="team-a")
    guest = pod_body(name="g", namespace="team-b", annotations=opt_in("pay"))
    assert state.on_pod(None, guest) is not None
    assert state.claims == {}
    change = state.on_registration(
        "MODIFIED", registration_body({"shareWith": ["team-b"]}, name="pay", namespace="team-a")
    )
    assert change is not None
    assert "/services/pay/g" in change.keys
    assert state.keys_by_pod["uid-g"] == {"/services/pay/g"}


def test_a_lapsed_claim_re_renders_who_wants_the_range() -> None:
    state = DesiredState(DEFAULTS, claims=ClaimPolicy(grace=0))
    owner = pod_body(name="o", namespace="team-a", annotations=opt_in("pay"))
    state.on_pod(None, owner)
    assert state.on_pod(None, pod_body(name="g", namespace="team-b", annotations=opt_in("pay")))
    state.on_pod("DELETED", owner)
    assert state.tenancy.lapse(0.0) == {"/services/pay/": ("team-a", "team-b")}
    change = state.reclaimed("/services/pay/")
    assert change.keys == {"/services/pay/g"}


def with_created(body: dict[str, Any], created: str) -> dict[str, Any]:
    body["metadata"]["creationTimestamp"] = created
    return body


@pytest.mark.parametrize(
    ("recorded", "held", "bodies", "derived", "owner"),
    [
        pytest.param(
            {},
            [("/services/pay/p", "team-b")],
            [],
            {"/services/pay/": "team-b"},
            "team-b",
            id="from-held-key",
        ),
        pytest.param(
            {"/services/pay/": "team-c"},
            [("/services/pay/p", "team-b")],
            [],
            {},
            "team-c",
            id="record-stands",
        ),
        pytest.param(
            {},
            [("/services/pay/p", "team-a"), ("/services/pay/q", "team-b")],
            [],
            {},
            None,
            id="tie-without-registrations",
        ),
        pytest.param(
            {},
            [("/services/pay/p", "team-a"), ("/services/pay/q", "team-b")],
            [
                with_created(
                    registration_body({}, name="pay", namespace="team-a"), "2024-02-01T00:00:00Z"
                ),
                with_created(
                    registration_body({}, name="pay", namespace="team-b"), "2024-01-01T00:00:00Z"
                ),
            ],
            {"/services/pay/": "team-b"},
            "team-b",
            id="tie-oldest-registration",
        ),
    ],
)
def test_restore_claims_from_records_and_held_keys(
    recorded: dict[str, str],
    held: list[tuple[str, str]],
    bodies: list[dict[str, Any]],
    derived: dict[str, str],
    owner: str | None,
) -> None:
    state = DesiredState(DEFAULTS)
    keys = [(key, ServiceId(namespace, "pay")) for key, namespace in held]
    assert state.restore(recorded, bodies, keys) == derived
    assert state.tenancy.owner("/services/pay/") == owner


def test_r2_1_a_key_template_with_the_pod_first_cannot_reach_into_another_range() -> None:
    """Review 2, R2-1: shop owns /services/goods/; evil's template {prefix}/{pod}/{uid} has
    the identity /services/, and a pod named goods would render /services/goods/<uid>."""
    state = DesiredState(DEFAULTS)
    state.on_pod(None, pod_body(annotations=opt_in()))
    assert state.tenancy.owner("/services/goods/") == "shop"
    spec = {"service": "evil-svc", "key": "{prefix}/{pod}/{uid}"}
    state.on_registration("ADDED", registration_body(spec, name="evil-svc", namespace="evil"))
    intruder = state.on_pod(
        None,
        pod_body(name="goods", namespace="evil", annotations=opt_in("evil-svc"), ip="10.6.6.6"),
    )
    assert intruder is not None
    assert intruder.after == set()
    assert set(state.claims) == {KEY}
    assert any(
        "/services/ overlap the range /services/goods/" in p and "namespace shop" in p
        for p in intruder.problems
    ), intruder.problems
    assert state.tenancy.owner("/services/") is None  # the wider range is nobody's
    reg = state.registrations[RegistrationId("evil", "evil-svc")]
    assert state.intrusion(reg.service, "/services/", "evil") is not None


def test_r2_2_a_dotted_coredns_name_cannot_nest_in_another_range() -> None:
    """Review 2, R2-2: with format coredns, service x.goods renders under goods' range."""
    state = DesiredState(Defaults(format="coredns"))
    state.on_pod(None, pod_body(annotations=opt_in("goods")))
    goods = "/skydns/local/skydns/goods/"
    assert state.tenancy.owner(goods) == "shop"
    intruder = state.on_pod(
        None, pod_body(name="i", namespace="evil", annotations=opt_in("x.goods"), ip="10.6.6.6")
    )
    assert intruder is not None
    assert intruder.after == set()
    assert [k for k in state.claims if k.startswith(goods)] == [f"{goods}goods-abc"]
    assert any(f"overlap the range {goods}" in p for p in intruder.problems), intruder.problems


def test_r2_1_the_other_way_round_a_range_inside_a_claimed_one_is_refused() -> None:
    """The first claim stands whichever of the two nested ranges comes first."""
    state = DesiredState(DEFAULTS)
    spec = {"service": "all", "key": "{prefix}/{pod}/{uid}"}
    state.on_registration("ADDED", registration_body(spec, name="all", namespace="evil"))
    assert state.tenancy.owner("/services/") == "evil"
    victim = state.on_pod(None, pod_body(annotations=opt_in()))
    assert victim is not None
    assert victim.after == set()
    assert any("belong to namespace evil" in p for p in victim.problems)


def test_r2_8_the_heir_of_a_lapsed_claim_shares_it_at_once() -> None:
    state = DesiredState(DEFAULTS, claims=ClaimPolicy(grace=0))
    old = with_created(registration_body(VALID, name="goods", namespace="team-b"), "2024-01-01")
    heir_spec = {"service": "goods", "shareWith": ["team-c"]}
    heir = with_created(registration_body(heir_spec, namespace="team-a"), "2024-02-01")
    state.on_registration("ADDED", old)
    state.on_registration("ADDED", heir)
    guest_body = pod_body(name="g", namespace="team-c", annotations=opt_in(), created="2024-03-01")
    guest = state.on_pod(None, guest_body)
    assert guest is not None and guest.after == set()
    state.on_registration("DELETED", old)
    assert state.tenancy.lapse(now=0.0) == {"/services/goods/": ("team-b", "team-a")}
    change = state.reclaimed("/services/goods/")
    assert state.tenancy.admits("/services/goods/", "team-c")
    assert "/services/goods/g" in change.keys
    assert state.keys_by_pod["uid-g"] == {"/services/goods/g"}


def test_an_administrators_assignment_moves_a_squatted_service_to_its_team() -> None:
    state = DesiredState(DEFAULTS)
    squat = pod_body(name="s", namespace="squat", annotations=opt_in("pay"), created="2000-01-01")
    state.on_pod(None, squat)
    state.on_pod(None, pod_body(name="p", namespace="team-b", annotations=opt_in("pay")))
    assert set(state.claims) == {"/services/pay/s"}
    namespace = {"metadata": {"name": "team-b", "annotations": {ASSIGNMENT: "pay, Bad!"}}}
    handovers, errors = state.on_namespace(namespace)
    assert handovers == {"/services/pay/": ("squat", "team-b")}
    assert len(errors) == 1 and "'Bad!'" in errors[0]
    change = state.reclaimed("/services/pay/")
    assert change.keys == {"/services/pay/s", "/services/pay/p"}
    assert set(state.claims) == {"/services/pay/p"}
    # the squatter's pod is told at once (a Warning), not at its next event
    assert [m for m in change.renewed["uid-s"] if "belong to namespace team-b" in m]
    assert "uid-p" not in change.renewed  # no problem: nothing to report
    assert state.problems["uid-s"] == tuple(change.renewed["uid-s"])
