"""Tenancy rules (issue #11): allowed prefixes, the bookkeeping prefix, and who owns a
service identity, with ties, sharing and the release grace."""

from __future__ import annotations

import pytest

from etcd_registrar.tenancy import Claims, Member, within

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
    claims = Claims(grace=10)
    claims.join(PAYMENTS, member("team-b", "reg"))
    claims.join(PAYMENTS, member("team-b", "pod"))
    claims.join(PAYMENTS, member("team-a", "pod"))
    claims.leave(PAYMENTS, "team-b/pod")  # a rollout: one member goes, the other stays
    assert claims.lapse(now=1000) == {}
    assert claims.owner(PAYMENTS) == "team-b"


def test_a_claim_lapses_after_the_grace_to_the_oldest_remaining_member() -> None:
    claims = Claims(grace=10)
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
    claims = Claims(grace=0)
    claims.join(PAYMENTS, member("team-b", "pod"))
    claims.leave(PAYMENTS, "team-b/pod")
    assert claims.lapse(now=0) == {PAYMENTS: ("team-b", None)}
    assert claims.owner(PAYMENTS) is None and claims.identities == {}


def test_a_restored_claim_whose_owner_never_returns_lapses() -> None:
    claims = Claims(grace=5)
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
