"""Tenancy rules (issue #11): allowed prefixes, the bookkeeping prefix, and who owns a
service identity, with ties, sharing and the release grace."""

from __future__ import annotations

import pytest

from etcd_registrar.source import Defaults, assigned_ranges
from etcd_registrar.tenancy import (
    ASSIGNMENT,
    Blocker,
    ClaimPolicy,
    Claims,
    Member,
    RangeIndex,
    Remote,
    within,
)

PAYMENTS = "/services/payments/"


@pytest.mark.parametrize(
    ("key", "allowed", "ok"),
    [
        ("/services/a/p", (), True),
        ("/etcd-registrar/default/leases/1", (), False),
        ("/etcd-registrar", ("/",), False),
        ("/etcd-registrar/x", ("/etcd-registrar",), False),  # whatever the flags say
        ("/services/a/p", ("/services",), True),
        ("/services/a/p", ("/services/",), True),
        ("/servicesx/a/p", ("/services",), False),  # whole segments only
        ("/config/db-url", ("/services", "/skydns"), False),
        ("/skydns/local/x/p", ("/services", "/skydns"), True),
        ("goods/p", ("/services",), False),  # go-zero keys need an allowed prefix of their own
        ("goods/p", ("goods",), True),
    ],
)
def test_within_allowed_prefixes(key: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert within(key, allowed) is ok


def member(namespace: str, name: str, created: str = "2024-01-01T00:00:00Z") -> Member:
    return Member(namespace, f"{namespace}/{name}", created)


def test_first_namespace_claims_and_others_are_refused() -> None:
    claims = Claims()
    assert claims.join(PAYMENTS, member("team-b", "payments-0"))
    assert not claims.join(PAYMENTS, member("team-a", "intruder", created="2000-01-01T00:00:00Z"))
    assert claims.owner(PAYMENTS) == "team-b"  # an older intruder changes nothing
    assert claims.admits(PAYMENTS, "team-b") and not claims.admits(PAYMENTS, "team-a")
    assert claims.admits("/services/other/", "team-a")  # nobody claimed it yet


def test_ownership_never_flips_while_the_owner_is_present() -> None:
    claims = Claims(ClaimPolicy(grace=10))
    claims.join(PAYMENTS, member("team-b", "reg"))
    claims.join(PAYMENTS, member("team-b", "pod"))
    claims.join(PAYMENTS, member("team-a", "pod"))
    claims.leave(PAYMENTS, "team-b/pod")  # a rollout: one member goes, the other stays
    assert claims.lapse(now=1000) == {}
    assert claims.owner(PAYMENTS) == "team-b"


def test_a_claim_lapses_after_the_grace_to_the_oldest_remaining_member() -> None:
    claims = Claims(ClaimPolicy(grace=10))
    claims.join(PAYMENTS, member("team-b", "pod"))
    claims.join(PAYMENTS, member("team-c", "pod", created="2024-05-01T00:00:00Z"))
    claims.join(PAYMENTS, member("team-a", "pod", created="2024-03-01T00:00:00Z"))
    claims.leave(PAYMENTS, "team-b/pod")
    assert claims.lapse(now=100) == {}  # the grace starts now
    claims.join(PAYMENTS, member("team-b", "pod2"))  # back within the grace: kept
    claims.leave(PAYMENTS, "team-b/pod2")
    assert claims.lapse(now=105) == {}
    assert claims.lapse(now=114) == {}
    assert claims.lapse(now=115) == {PAYMENTS: ("team-b", "team-a")}
    assert claims.admits(PAYMENTS, "team-a") and not claims.admits(PAYMENTS, "team-c")


def test_a_claim_with_nobody_left_is_forgotten() -> None:
    claims = Claims(ClaimPolicy(grace=0))
    claims.join(PAYMENTS, member("team-b", "pod"))
    claims.leave(PAYMENTS, "team-b/pod")
    assert claims.lapse(now=0) == {PAYMENTS: ("team-b", None)}
    assert claims.owner(PAYMENTS) is None and claims.identities == {}


def test_a_restored_claim_whose_owner_never_returns_lapses() -> None:
    claims = Claims(ClaimPolicy(grace=5))
    claims.restore(PAYMENTS, "team-b")
    claims.join(PAYMENTS, member("team-a", "pod"))
    assert not claims.admits(PAYMENTS, "team-a")
    assert claims.lapse(now=0) == {}
    assert claims.lapse(now=5) == {PAYMENTS: ("team-b", "team-a")}


def test_only_the_owner_shares() -> None:
    claims = Claims()
    claims.join(PAYMENTS, member("team-b", "reg"))
    assert not claims.share(PAYMENTS, "team-a", ["team-a"])  # an intruder cannot admit itself
    assert not claims.admits(PAYMENTS, "team-a")
    assert claims.share(PAYMENTS, "team-b", ["team-a", "team-b"])
    assert claims.admits(PAYMENTS, "team-a") and claims.admits(PAYMENTS, "team-b")
    assert not claims.share(PAYMENTS, "team-b", ["team-a"])  # no change
    assert claims.share(PAYMENTS, "team-b", [])
    assert not claims.admits(PAYMENTS, "team-a")


@pytest.mark.parametrize(
    ("claimed", "wanted", "admitted"),
    [
        pytest.param("/services/goods/", "/services/goods/", False, id="same-range"),
        pytest.param("/services/goods/", "/services/", False, id="contains-the-claim"),
        pytest.param("/services/", "/services/goods/", False, id="inside-the-claim"),
        pytest.param("/services/goods/", "/services/goodsx/", True, id="whole-segments-only"),
        pytest.param("/services/goods/", "/services/shop/goods/", True, id="a-sibling-subtree"),
        pytest.param("/skydns/local/goods/", "/skydns/local/goods/x/", False, id="dotted-name"),
        pytest.param("goods/", "/services/goods/", True, id="go-zero-no-prefix"),
        pytest.param("/", "/services/goods/", False, id="the-root"),
    ],
)
def test_identities_are_ranges(claimed: str, wanted: str, admitted: bool) -> None:
    """Guarantee 9: two identities overlap when one is a prefix of the other, either way."""
    claims = Claims()
    assert claims.join(claimed, member("shop", "pod"))
    assert claims.admits(wanted, "evil") is admitted
    assert claims.join(wanted, member("evil", "pod")) is (admitted and wanted != claimed)
    blocker = claims.blocker(wanted, "evil")
    assert (blocker is None) is admitted
    if blocker is not None:
        assert blocker == Blocker(claimed, "shop")


@pytest.mark.parametrize(
    ("key", "admitted"),
    [
        ("/services/goods/p", False),
        ("/services/goods", False),  # the range's own name: CoreDNS answers it for goods
        ("/services/goods-2/p", True),
        ("/services/p", True),
    ],
)
def test_a_key_inside_another_namespaces_range_is_refused(key: str, admitted: bool) -> None:
    claims = Claims()
    claims.join("/services/goods/", member("shop", "pod"))
    assert (claims.key_blocker(key, "evil") is None) is admitted
    assert claims.key_blocker(key, "shop") is None
    claims.share("/services/goods/", "shop", ["evil"])
    assert claims.key_blocker(key, "evil") is None


def test_sharing_a_range_admits_a_claim_around_it() -> None:
    claims = Claims()
    claims.join(PAYMENTS, member("team-b", "pod"))
    assert not claims.join("/services/", member("team-a", "pod"))
    claims.share(PAYMENTS, "team-b", ["team-a"])
    assert claims.admits("/services/", "team-a")


def test_a_range_kept_out_by_another_claim_is_owned_once_that_claim_lapses() -> None:
    claims = Claims(ClaimPolicy(grace=10))
    claims.join(PAYMENTS, member("team-b", "pod"))
    assert not claims.join("/services/", member("team-a", "pod"))
    assert claims.owner("/services/") is None
    assert claims.lapse(now=0) == {}
    assert claims.lapse(now=20) == {}  # still kept out: nothing changes hands
    claims.leave(PAYMENTS, "team-b/pod")
    assert claims.lapse(now=30) == {}  # payments' grace starts
    assert claims.lapse(now=40) == {PAYMENTS: ("team-b", None), "/services/": (None, "team-a")}
    assert claims.admits("/services/", "team-a")


def test_an_heir_kept_out_by_an_overlapping_claim_is_passed_over() -> None:
    claims = Claims(ClaimPolicy(grace=0))
    claims.join("/services/pay/", member("team-b", "pod"))
    claims.restore("/services/", "team-c")  # an old record overlapping team-b's claim
    claims.join("/services/", member("team-b", "pod", created="2000-01-01T00:00:00Z"))
    claims.join("/services/", member("team-a", "pod", created="2024-02-01T00:00:00Z"))
    # team-b is the oldest member but its own claim inside keeps team-a's range owner-less;
    # team-b may own both: it is the heir.
    assert claims.lapse(now=0) == {"/services/": ("team-c", "team-b")}


def test_overlaps_are_found_among_ten_thousand_claims() -> None:
    claims = Claims()
    for i in range(10_000):
        claims.join(f"/services/svc-{i:05d}/", member(f"ns-{i}", "pod"))
    assert claims.admits("/services/new/", "ns-x")
    assert claims.blocker("/services/svc-05000/x/", "ns-x") == Blocker(
        "/services/svc-05000/", "ns-5000"
    )
    assert claims.blocker("/services/", "ns-x") == Blocker("/services/svc-00000/", "ns-0")


def test_a_namespace_owns_at_most_its_quota_of_ranges_but_assigned_ones() -> None:
    claims = Claims(ClaimPolicy(max_per_namespace=2))
    assert claims.join("/services/a/", member("squat", "a"))
    assert claims.join("/services/b/", member("squat", "b"))
    assert not claims.join("/services/c/", member("squat", "c"))
    assert "--max-claims-per-namespace 2" in (claims.unclaimable("/services/c/", "squat") or "")
    assert not claims.admits("/services/c/", "squat")
    claims.assign("squat", ["/services/c/"])
    assert claims.owner("/services/c/") == "squat"  # assigned: the quota does not count it


def test_an_assignment_takes_a_squatted_range_back_at_once() -> None:
    claims = Claims()
    claims.join(PAYMENTS, member("squat", "reg", created="2000-01-01T00:00:00Z"))
    claims.join(PAYMENTS, member("team-b", "pod"))
    claims.join("/services/", member("team-c", "pod"))  # kept out by squat's claim
    assert claims.assign("team-b", ["/services/payments"]) == {PAYMENTS: ("squat", "team-b")}
    assert claims.admits(PAYMENTS, "team-b") and not claims.admits(PAYMENTS, "squat")
    assert "assigned to namespace team-b" in (claims.unclaimable("/services/", "team-c") or "")
    assert claims.assign("team-b", []) == {}  # unassigned: team-b keeps what it owns
    assert claims.owner(PAYMENTS) == "team-b"


def test_an_assigned_range_nobody_may_own_yet_goes_to_nobody() -> None:
    claims = Claims()
    claims.join(PAYMENTS, member("squat", "reg"))
    assert claims.assign("team-b", [PAYMENTS]) == {PAYMENTS: ("squat", None)}
    assert claims.join(PAYMENTS, member("team-b", "pod"))  # the assignee comes: it owns it


def test_assigned_only_lets_namespaces_own_what_they_were_assigned() -> None:
    claims = Claims(ClaimPolicy(assigned_only=True))
    assert not claims.join(PAYMENTS, member("team-b", "pod"))
    assert "--claims=assigned" in (claims.unclaimable(PAYMENTS, "team-b") or "")
    assert claims.assign("team-b", ["/services/"]) == {PAYMENTS: (None, "team-b")}
    assert claims.join("/services/orders/", member("team-b", "pod"))
    assert not claims.join("/skydns/x/", member("team-b", "pod"))


@pytest.mark.parametrize(
    ("annotation", "ranges", "errors"),
    [
        ("pay, /skydns/local/skydns/pay", ["/services/pay/", "/skydns/local/skydns/pay/"], 0),
        ("", [], 0),
        ("Pay!, /etcd-registrar/x, /a/../b, ok", ["/services/ok/"], 3),
    ],
)
def test_an_assignment_is_read_from_the_namespace_annotation(
    annotation: str, ranges: list[str], errors: int
) -> None:
    body = {"metadata": {"name": "team-b", "annotations": {ASSIGNMENT: annotation}}}
    found, problems = assigned_ranges(body, Defaults())
    assert (found, len(problems)) == (ranges, errors), problems


def test_a_range_index_finds_the_ranges_around_and_inside_one() -> None:
    index: RangeIndex[int] = RangeIndex()
    for i, range_ in enumerate(["/", "/a/", "/a/b/", "/a/bc/", "/ab/", "/a/b/c/"]):
        index.set(range_, i)
    assert list(index.containing("/a/b/x/")) == ["/", "/a/", "/a/b/"]
    assert sorted(index.overlapping("/a/b/")) == ["/", "/a/", "/a/b/", "/a/b/c/"]
    index.discard("/a/b/")
    index.discard("/never/")
    assert sorted(index.overlapping("/a/b/")) == ["/", "/a/", "/a/b/c/"]
    assert index.values == {"/": 0, "/a/": 1, "/a/bc/": 3, "/ab/": 4, "/a/b/c/": 5}


def remote(namespace: str, revision: int, *shared: str) -> Remote:
    return Remote(namespace, frozenset(shared), revision)


@pytest.mark.parametrize(
    ("claim", "namespace", "admitted"),
    [
        pytest.param(remote("payments", 5), "payments", True, id="same-namespace-same-tenant"),
        pytest.param(remote("payments", 5), "team-a", False, id="another-namespace"),
        pytest.param(remote("payments", 5, "team-a"), "team-a", True, id="shared-with-it"),
    ],
)
def test_another_clusters_claim_holds_here(claim: Remote, namespace: str, admitted: bool) -> None:
    """#20 item 3: claims hold across clusters sharing one etcd, by namespace sameness."""
    claims = Claims()
    assert claims.remote_claim("cluster-b", PAYMENTS, claim) == {}
    assert claims.admits(PAYMENTS, namespace) is admitted
    assert claims.admits("/services/", namespace) is admitted  # around it, as here
    assert (claims.key_blocker(f"{PAYMENTS}p", namespace) is None) is admitted
    assert claims.join(PAYMENTS, member(namespace, "pod")) is admitted
    if not admitted:
        assert claims.blocker(PAYMENTS, namespace) == Blocker(PAYMENTS, "payments", "cluster-b")


def test_of_two_clusters_claiming_one_range_the_older_record_stands() -> None:
    claims = Claims()
    claims.join(PAYMENTS, member("team-a", "pod"))
    assert claims.recorded(PAYMENTS, 10) == {}
    # an older claim of another namespace in another cluster: ours yields at once
    assert claims.remote_claim("cluster-b", PAYMENTS, remote("team-b", 7)) == {
        PAYMENTS: ("team-a", None)
    }
    assert not claims.admits(PAYMENTS, "team-a")
    # released there: ours may be claimed again
    assert claims.remote_claim("cluster-b", PAYMENTS, None) == {}
    assert claims.admits(PAYMENTS, "team-a")


def test_a_younger_claim_of_another_cluster_keeps_out_nobody_here() -> None:
    claims = Claims()
    claims.join(PAYMENTS, member("team-a", "pod"))
    claims.recorded(PAYMENTS, 10)
    assert claims.remote_claim("cluster-b", "/services/", remote("team-b", 12)) == {}
    assert claims.owner(PAYMENTS) == "team-a"
    assert claims.key_blocker(f"{PAYMENTS}p", "team-a") is None  # the race was ours
    # it lost the race as a whole (its cluster yields it too): it keeps nobody out here
    assert claims.admits("/services/orders/", "team-c")
