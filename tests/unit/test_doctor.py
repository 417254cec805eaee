"""`etcd-registrar doctor`'s own logic: which rights it asks for, how it words results. Its
checks against a real API server and etcd are in tests/e2e/test_doctor.py and test_chart.py."""

from __future__ import annotations

import json

import kubernetes
import pytest

from etcd_registrar.doctor import needed, summary
from etcd_registrar.kube import explain


@pytest.mark.parametrize(
    ("failures", "skipped", "line"),
    [
        (0, 0, "all checks passed"),
        (1, 0, "1 check failed"),
        (2, 0, "2 checks failed"),
        (1, 11, "1 check failed, 11 skipped"),
    ],
)
def test_summary_counts_in_words(failures: int, skipped: int, line: str) -> None:
    assert summary(failures, skipped) == line


CRDS = "customresourcedefinitions.apiextensions.k8s.io"
IN_SCOPE = [
    "can list pods",
    "can watch pods",
    "can create events",
    "can list serviceregistrations.etcd-registrar.io",
    "can watch serviceregistrations.etcd-registrar.io",
    "can patch serviceregistrations.etcd-registrar.io/status",
]


@pytest.mark.parametrize(
    ("namespaces", "expected"),
    [
        pytest.param(
            [],
            [
                *(f"{right} in all namespaces" for right in IN_SCOPE),
                f"can list {CRDS} in the cluster",
                f"can watch {CRDS} in the cluster",
                "can get namespaces kube-system in the cluster",  # the cluster's identity
                "can list namespaces in the cluster",  # the assigned ranges (tenancy)
                "can watch namespaces in the cluster",
            ],
            id="cluster-wide",
        ),
        pytest.param(
            ["shop", "web"],
            [
                *(f"{right} in shop" for right in IN_SCOPE),
                *(f"{right} in web" for right in IN_SCOPE),
                f"can list {CRDS} in the cluster",
                f"can watch {CRDS} in the cluster",
                "can get namespaces kube-system in the cluster",
                "can list namespaces in the cluster",
                "can watch namespaces in the cluster",
            ],
            id="namespaced",
        ),
    ],
)
def test_needed_rights_are_what_the_operator_and_kopf_use(
    namespaces: list[str], expected: list[str]
) -> None:
    assert [right.label(ns) for right, ns in needed(namespaces, False)] == expected


def test_the_readiness_gate_needs_pods_status_patch() -> None:
    gate = "can patch pods/status in shop"
    assert gate in [right.label(ns) for right, ns in needed(["shop"])]
    assert gate not in [right.label(ns) for right, ns in needed(["shop"], readiness_gate=False)]


def api_exception(status: int, reason: str, body: object) -> kubernetes.client.ApiException:
    exc = kubernetes.client.ApiException(status=status, reason=reason)
    exc.headers = {"Audit-Id": "1234", "Content-Type": "application/json"}
    exc.body = body if isinstance(body, str) or body is None else json.dumps(body)
    return exc


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        pytest.param(
            api_exception(
                403,
                "Forbidden",
                {
                    "kind": "Status",
                    "message": 'pods is forbidden: User "x" cannot list resource "pods"',
                    "reason": "Forbidden",
                    "code": 403,
                },
            ),
            '403 pods is forbidden: User "x" cannot list resource "pods"',
            id="api-status",
        ),
        pytest.param(
            api_exception(502, "Bad Gateway", "<html>"), "502 Bad Gateway", id="no-status"
        ),
        pytest.param(api_exception(404, "Not Found", None), "404 Not Found", id="no-body"),
        pytest.param(OSError("first\nsecond"), "first", id="multi-line"),
        pytest.param(TimeoutError(), "TimeoutError", id="no-message"),
    ],
)
def test_failures_are_explained_in_one_line(exc: Exception, line: str) -> None:
    assert explain(exc) == line
