"""What a replica makes of the leader it finds (candidacy.py): another replica of its
configuration, a newer or older configuration of its installation, or another installation;
and what it reads from a leader key (trusting nothing in it)."""

from __future__ import annotations

import json

import pytest

from etcd_registrar.candidacy import Candidate, Standing, judge

ME = Candidate("me", ("shop",), None, "registrar/etcd-registrar", 3)


def replica(**changes: object) -> Candidate:
    fields = {
        "id": "leader",
        "namespaces": ME.namespaces,
        "pod_selector": ME.pod_selector,
        "installation": ME.installation,
        "generation": ME.generation,
    }
    return Candidate(**(fields | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("leader", "standing", "said"),
    [
        (replica(), Standing.STANDBY, ""),
        (replica(generation=1), Standing.STANDBY, ""),  # an upgrade that keeps the scope
        (replica(generation=2, namespaces=()), Standing.SUCCESSOR, "all namespaces"),
        (replica(generation=2, pod_selector="a=b"), Standing.SUCCESSOR, "pods a=b"),
        (replica(generation=4, namespaces=("shop", "b")), Standing.SUPERSEDED, "newer"),
        (replica(namespaces=("team-b",)), Standing.REFUSED, "--config-generation"),
        (replica(installation="other/etcd-registrar"), Standing.REFUSED, "other/etcd-reg"),
        # a leader that names no installation (an older version): the scope decides
        (replica(installation="", generation=0, namespaces=()), Standing.SUCCESSOR, "takes"),
        (None, Standing.REFUSED, "no etcd-registrar wrote"),
    ],
)
def test_a_replica_judges_the_leader(
    leader: Candidate | None, standing: Standing, said: str
) -> None:
    verdict = judge(ME, leader)
    assert verdict.standing is standing
    assert said in verdict.reason
    assert verdict.defers is (standing in (Standing.SUPERSEDED, Standing.REFUSED))


def test_a_refused_replica_says_what_to_fix() -> None:
    reason = judge(ME, replica(namespaces=("team-b",))).reason
    assert "team-b" in reason and "shop" in reason and "--owner-id" in reason


def test_the_leader_value_reads_back() -> None:
    assert Candidate.parse(ME.value()) == ME


def test_a_leader_value_of_an_older_version_reads_with_defaults() -> None:
    old = json.dumps({"id": "a", "namespaces": ["shop"], "podSelector": None})
    assert Candidate.parse(old) == Candidate("a", ("shop",), None, "", 0)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not json",
        "[]",
        "{}",
        '{"id": 1}',
        '{"id": "a", "namespaces": [1]}',
        '{"id": "a", "namespaces": "shop"}',
        '{"id": "a", "generation": "2"}',
        '{"id": "a", "generation": true}',
        '{"id": "a", "podSelector": 5}',
        '{"id": "a", "installation": null}',
        "[" * 100_000,
    ],
)
def test_a_leader_value_we_did_not_write_is_no_candidate(value: str) -> None:
    assert Candidate.parse(value) is None
