"""Source (docs/annotations.md, docs/crd.md): pods and registrations in, desired endpoints out."""

from __future__ import annotations

import re
from typing import Any

import pytest

from etcd_registrar import ANNOTATION_METADATA, ANNOTATION_PORT
from etcd_registrar.model import Port
from etcd_registrar.source import (
    Defaults,
    Endpoint,
    PodView,
    PortList,
    Problem,
    Registration,
    desired_for_pod,
    resolve_port,
)
from tests.unit.builders import opt_in, pod_body, registration_body

DEFAULTS = Defaults()


def pod(**kwargs: Any) -> PodView:
    return PodView.from_body(pod_body(**kwargs))


def reg(
    spec: dict[str, Any], *, name: str = "goods", defaults: Defaults = DEFAULTS
) -> Registration:
    registration = Registration.from_body(registration_body(spec, name=name), defaults)
    assert registration.error is None, registration.error
    return registration


def desired(
    view: PodView, *registrations: Registration, defaults: Defaults = DEFAULTS
) -> tuple[list[Endpoint], list[Problem]]:
    endpoints, problems, _ = desired_for_pod(view, registrations, defaults)
    return endpoints, problems


def keys(
    view: PodView, *registrations: Registration, defaults: Defaults = DEFAULTS
) -> set[tuple[str, str, int]]:
    endpoints, problems = desired(view, *registrations, defaults=defaults)
    assert problems == []
    return {(e.key, e.value, e.ttl) for e in endpoints}


def test_pod_view_from_realistic_body() -> None:
    body = pod_body(
        annotations=opt_in(port="grpc", metadata={"version": "v1"}),
        ports=(("http", 8080), ("grpc", 9090), (None, 9100)),
        deleting=True,
    )
    body["spec"]["containers"].append({"name": "sidecar", "ports": [{"containerPort": 15090}]})
    view = PodView.from_body(body)
    assert (view.uid, view.namespace, view.name, view.node) == (
        "uid-goods-abc",
        "shop",
        "goods-abc",
        "node-1",
    )
    assert view.labels == {"app": "goods"}
    assert view.ports == (("http", 8080), ("grpc", 9090), (None, 9100), (None, 15090))
    assert (view.state.ip, view.state.ready, view.state.terminating) == ("10.0.0.5", True, True)
    assert (view.service, view.port, view.metadata) == ("goods", "grpc", {"version": "v1"})
    assert view.annotation_error is None
    assert view.rank == ("2024-01-01T00:00:00Z", "shop", "goods-abc")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(pod_body(), id="unannotated"),
        pytest.param({"metadata": {"uid": "u", "namespace": "n", "name": "p"}}, id="bare"),
        pytest.param(pod_body(ip=None, ready=None, phase="Pending"), id="pending"),
    ],
)
def test_pod_view_without_opt_in(body: dict[str, Any]) -> None:
    view = PodView.from_body(body)
    assert (view.service, view.port, view.annotation_error) == (None, None, None)


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (opt_in(port="0"), ANNOTATION_PORT),
        (opt_in(metadata="{nope"), ANNOTATION_METADATA),
    ],
    ids=["port", "metadata"],
)
def test_pod_view_keeps_annotation_error(given: dict[str, str], named: str) -> None:
    view = pod(annotations=given)
    assert view.service is None
    assert view.annotation_error is not None
    assert named in view.annotation_error


PORTS: PortList = (("http", 8080), (None, 9100), ("grpc", 9090))


@pytest.mark.parametrize(
    ("requested", "ports", "expected"),
    [
        pytest.param(None, PORTS, 8080, id="default-first"),
        pytest.param(7000, PORTS, 7000, id="number"),
        pytest.param("grpc", PORTS, 9090, id="name"),
        pytest.param(None, (), "declare one", id="none-declared"),
        pytest.param("admin", PORTS, "named: http, grpc", id="undeclared-name"),
        pytest.param("admin", ((None, 80),), "named: none", id="no-names"),
    ],
)
def test_resolve_port(requested: Port | None, ports: PortList, expected: int | str) -> None:
    if isinstance(expected, int):
        assert resolve_port(requested, ports) == expected
        return
    with pytest.raises(ValueError, match=re.escape(expected)):
        resolve_port(requested, ports)


def test_annotated_pod_without_registration_uses_defaults() -> None:
    view = pod(annotations=opt_in())
    assert keys(view) == {("/services/goods/goods-abc", "10.0.0.5:8080", 10)}
    go_zero = Defaults(ttl=20, format="go-zero")
    assert keys(view, defaults=go_zero) == {("goods/goods-abc", "10.0.0.5:8080", 20)}


def test_registration_of_same_service_governs() -> None:
    governing = reg({"format": "kratos", "prefix": "/ms", "ttl": 30, "port": "grpc"})
    other = reg({"format": "go-zero", "ttl": 40}, name="other")
    view = pod(annotations=opt_in(), ports=(("http", 8080), ("grpc", 9090)))
    [endpoint], problems = desired(view, governing, other)
    assert problems == []
    assert (endpoint.key, endpoint.ttl) == ("/ms/goods/goods-abc", 30)
    assert '"grpc://10.0.0.5:9090?isSecure=false"' in endpoint.value


def test_spec_service_names_the_service() -> None:
    view = pod(annotations=opt_in("orders"))
    assert keys(view, reg({"service": "orders", "ttl": 15})) == {
        ("/services/orders/goods-abc", "10.0.0.5:8080", 15)
    }


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"app": "goods"}, {("/services/goods/goods-abc", "10.0.0.5:8080", 10)}),
        ({"app": "orders"}, set()),
    ],
    ids=["matching", "not-matching"],
)
def test_selector_registers_unannotated_pod(
    labels: dict[str, str], expected: set[tuple[str, str, int]]
) -> None:
    selecting = reg({"selector": {"matchLabels": {"app": "goods"}}})
    assert keys(pod(labels=labels), selecting) == expected


def test_one_key_per_service_from_annotation_and_selector() -> None:
    selecting = reg({"selector": {"matchLabels": {"app": "goods"}}})
    endpoints, _ = desired(pod(annotations=opt_in()), selecting)
    assert [e.key for e in endpoints] == ["/services/goods/goods-abc"]


def test_annotation_and_other_selector_give_both_services() -> None:
    selecting = reg({"service": "all", "selector": {}}, name="all")
    endpoints, _ = desired(pod(annotations=opt_in()), selecting)
    assert sorted(e.key for e in endpoints) == [
        "/services/all/goods-abc",
        "/services/goods/goods-abc",
    ]


def test_invalid_annotation_is_a_problem_not_a_key() -> None:
    endpoints, problems = desired(pod(annotations=opt_in("Bad/Name")))
    assert endpoints == []
    [problem] = problems
    assert problem.service is None
    assert "etcd-registrar.io/service" in problem.message


def test_unresolvable_port_is_a_problem_for_its_service() -> None:
    endpoints, problems = desired(pod(annotations=opt_in(port="admin")))
    assert endpoints == []
    assert problems == [
        Problem("goods", "port name 'admin' is not declared by any container (named: http)")
    ]


@pytest.mark.parametrize(
    ("body", "publish_not_ready", "registered"),
    [
        pytest.param({"ready": False}, False, False, id="not-ready"),
        pytest.param({"ready": False}, True, True, id="not-ready-published"),
        pytest.param({"deleting": True}, False, False, id="terminating"),
        pytest.param({"deleting": True}, True, True, id="terminating-published"),
        pytest.param({"ip": None, "ready": False}, True, False, id="no-ip-published"),
        pytest.param({"phase": "Succeeded"}, True, False, id="finished-published"),
    ],
)
def test_readiness_gates_keys(
    body: dict[str, Any], publish_not_ready: bool, registered: bool
) -> None:
    view = pod(annotations=opt_in(), **body)
    endpoints, problems = desired(view, reg({"publishNotReady": publish_not_ready}))
    assert problems == []
    assert bool(endpoints) is registered


@pytest.mark.parametrize(
    ("pod_port", "spec_port", "expected"),
    [
        pytest.param(None, None, 8080, id="first-declared"),
        pytest.param(None, "grpc", 9090, id="registration-port"),
        pytest.param("http", "grpc", 8080, id="annotation-wins"),
        pytest.param("7000", "grpc", 7000, id="annotation-number-wins"),
    ],
)
def test_port_precedence(pod_port: str | None, spec_port: str | None, expected: int) -> None:
    view = pod(annotations=opt_in(port=pod_port), ports=(("http", 8080), ("grpc", 9090)))
    spec = {} if spec_port is None else {"port": spec_port}
    [endpoint], _ = desired(view, reg(spec))
    assert endpoint.value == f"10.0.0.5:{expected}"


def test_port_annotation_wins_for_selected_pod() -> None:
    """docs/crd.md: `port` of a registration - "an annotation on the pod wins"."""
    selecting = reg({"selector": {"matchLabels": {"app": "goods"}}, "port": "http"})
    view = pod(annotations={ANNOTATION_PORT: "grpc"}, ports=(("http", 8080), ("grpc", 9090)))
    [endpoint], _ = desired(view, selecting)
    assert endpoint.value == "10.0.0.5:9090"


def test_invalid_governing_registration_writes_nothing() -> None:
    broken = Registration.from_body(registration_body({"key": "{prefix}/{foo}"}), DEFAULTS)
    assert desired(pod(annotations=opt_in()), broken) == ([], [])


@pytest.mark.parametrize(
    ("body", "registrations", "interests"),
    [
        pytest.param({}, [], {"/services/goods/": "goods"}, id="ready"),
        pytest.param({"ready": False}, [], {"/services/goods/": "goods"}, id="not-ready"),
        pytest.param(
            {},
            [{"service": "all", "prefix": "/all", "selector": {}}],
            {"/services/goods/": "goods", "/all/all/": "all"},
            id="annotation-and-selector",
        ),
        pytest.param(
            {}, [{"service": "goods", "key": "{prefix}/{foo}"}], {}, id="invalid-governing"
        ),
    ],
)
def test_interests_are_the_ranges_wanted_ready_or_not(
    body: dict[str, Any], registrations: list[dict[str, Any]], interests: dict[str, str]
) -> None:
    regs = [
        Registration.from_body(registration_body(s, name=f"r{n}"), DEFAULTS)
        for n, s in enumerate(registrations)
    ]
    assert desired_for_pod(pod(annotations=opt_in(), **body), regs, DEFAULTS).interests == interests


@pytest.mark.parametrize(
    ("spec", "mentions"),
    [
        pytest.param({"ttl": 1}, "ttl", id="ttl"),
        pytest.param({"format": "consul"}, "format", id="format"),
        pytest.param({"bogus": 1}, "bogus", id="unknown-field"),
        pytest.param({"prefix": "/a/../b"}, "prefix", id="prefix"),
        pytest.param({"publishNotReady": "maybe"}, "publishNotReady", id="bool"),
        pytest.param({"key": "{prefix}/{foo}"}, "{foo}", id="unknown-placeholder"),
        pytest.param({"value": "{metadata}"}, "{metadata}", id="preset-placeholder"),
        pytest.param({"key": "{service}/{pod}"}, "{prefix}", id="key-outside-prefix"),
    ],
)
def test_registration_error(spec: dict[str, Any], mentions: str) -> None:
    registration = Registration.from_body(registration_body(spec), DEFAULTS)
    assert registration.error is not None
    assert mentions in registration.error
    assert (registration.layout, registration.service) == (None, "goods")


def test_registration_resolves_defaults() -> None:
    defaults = Defaults(ttl=25, format="json")
    registration = reg({}, defaults=defaults)
    assert (registration.service, registration.format) == ("goods", "json")
    assert registration.layout is not None
    assert (registration.layout.ttl, registration.layout.prefix) == (25, "/services")


@pytest.mark.parametrize("fmt", ["go-zero", "kratos", "coredns"])
def test_operator_default_prefix_does_not_break_other_formats(fmt: str) -> None:
    """A registration that sets no prefix and no key is valid whatever --default-prefix is."""
    registration = Registration.from_body(
        registration_body({"format": fmt}), Defaults(prefix="/apps")
    )
    assert registration.error is None
