"""What a replica makes of the leader it finds (candidacy.py): another replica of its
configuration, a newer or older configuration of its installation, or another installation;
and what it reads from a leader key (trusting nothing in it)."""

from __future__ import annotations

import json

import pytest

from etcd_registrar.candidacy import Candidate, Standing, is_foreign, judge, record_cluster

ME = Candidate("me", ("shop",), None, "registrar/etcd-registrar", 3, "uid-me")


def replica(**changes: object) -> Candidate:
    fields = {
        "id": "leader",
        "namespaces": ME.namespaces,
        "pod_selector": ME.pod_selector,
        "installation": ME.installation,
        "generation": ME.generation,
        "cluster": ME.cluster,
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
        # another cluster, whatever else matches: the other cluster is named
        (replica(cluster="uid-other"), Standing.FOREIGN, "uid-other"),
        (replica(cluster="uid-other", generation=9, namespaces=()), Standing.FOREIGN, "uid-me"),
        # a leader that could not learn its cluster (or an older version): not told apart
        (replica(cluster=""), Standing.STANDBY, ""),
    ],
)
def test_a_replica_judges_the_leader(
    leader: Candidate | None, standing: Standing, said: str
) -> None:
    verdict = judge(ME, leader)
    assert verdict.standing is standing
    assert said in verdict.reason
    deferring = (Standing.SUPERSEDED, Standing.REFUSED, Standing.FOREIGN)
    assert verdict.defers is (standing in deferring)
    assert verdict.refused is (standing in (Standing.REFUSED, Standing.FOREIGN))


def test_a_refused_replica_says_what_to_fix() -> None:
    reason = judge(ME, replica(namespaces=("team-b",))).reason
    assert "team-b" in reason and "shop" in reason and "--owner-id" in reason


def test_the_leader_value_reads_back() -> None:
    assert Candidate.parse(ME.value()) == ME


def test_a_leader_value_of_an_older_version_reads_with_defaults() -> None:
    old = json.dumps({"id": "a", "namespaces": ["shop"], "podSelector": None})
    assert Candidate.parse(old) == Candidate("a", ("shop",), None, "", 0, "")


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
        '{"id": "a", "cluster": 7}',
        "[" * 100_000,
    ],
)
def test_a_leader_value_we_did_not_write_is_no_candidate(value: str) -> None:
    assert Candidate.parse(value) is None


@pytest.mark.parametrize(
    ("value", "cluster"),
    [
        ('{"namespace": "shop", "cluster": "uid-a"}', "uid-a"),
        ('{"namespace": "shop"}', ""),  # written by an older version, or a cluster unknown
        ('{"cluster": 1}', ""),
        ("[]", ""),
        ("not json", ""),
        ("[" * 100_000, ""),
    ],
)
def test_a_record_names_its_cluster(value: str, cluster: str) -> None:
    assert record_cluster(value) == cluster


@pytest.mark.parametrize(
    ("theirs", "mine", "foreign"),
    [("a", "b", True), ("a", "a", False), ("", "b", False), ("a", "", False)],
)
def test_only_two_known_clusters_are_told_apart(theirs: str, mine: str, foreign: bool) -> None:
    assert is_foreign(theirs, mine) is foreign
