"""Property (guarantee 9, issue #19): whatever formats, templates, prefixes, zones, service,
pod and namespace names tenants choose, and in whatever order pods, registrations and lapsing
claims come, no key is ever admitted inside a range another namespace owns and has not
shared with the key's namespace."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcd_registrar.desired import DesiredState
from etcd_registrar.formats import FORMATS, Format
from etcd_registrar.source import Defaults
from etcd_registrar.tenancy import ClaimPolicy
from tests.unit.builders import opt_in, pod_body, registration_body

namespaces = st.sampled_from(["shop", "evil", "team-c"])
# Names that nest into each other: dotted DNS names, pod names equal to service names.
services = st.sampled_from(["goods", "x.goods", "goods.x", "x", "pay", "a.b.goods"])
pod_names = st.sampled_from(["goods", "x", "pay", "p1", "uid-goods"])
prefixes = st.sampled_from([None, "/services", "/services/goods", "/skydns", "/skydns/local", ""])
keys = st.sampled_from(
    [
        None,
        "{prefix}/{pod}/{uid}",
        "{prefix}/{pod}",
        "{prefix}/{service}/{pod}",
        "{prefix}/{namespace}/{pod}",
        "{prefix}/{service}-{pod}",
        "{prefix}/{node}/{service}/{pod}",
        "{service}/{pod}",
    ]
)
zones = st.sampled_from([None, "skydns.local", "goods.skydns.local", "local", "x.goods.local"])
specs = st.fixed_dictionaries(
    {"service": services},
    optional={
        "format": st.sampled_from(FORMATS),
        "prefix": prefixes,
        "key": keys,
        "zone": zones,
        "shareWith": st.lists(namespaces, max_size=2, unique=True),
    },
).map(lambda spec: {k: v for k, v in spec.items() if v is not None})

registration_events = st.tuples(
    st.just("registration"), st.sampled_from(["ADDED", "DELETED"]), namespaces, specs
)
pod_events = st.tuples(
    st.just("pod"), st.sampled_from(["ADDED", "DELETED"]), namespaces, pod_names, services
)
lapses = st.tuples(st.just("lapse"))
events = st.lists(st.one_of(registration_events, pod_events, lapses), max_size=14)


def apply(state: DesiredState, event: tuple[Any, ...], clock: list[float]) -> None:
    match event:
        case ("registration", kind, namespace, spec):
            name = spec["service"].replace(".", "-")
            body = registration_body(spec, name=name, namespace=namespace)
            state.on_registration(kind, body)
        case ("pod", kind, namespace, name, service):
            body = pod_body(name=name, namespace=namespace, annotations=opt_in(service))
            body["metadata"]["uid"] = f"{namespace}-{name}"
            state.on_pod(kind, body)
        case ("lapse",):
            clock[0] += 1.0
            for identity in state.tenancy.lapse(clock[0]):
                state.reclaimed(identity)


def intrusions(state: DesiredState) -> list[tuple[str, str, str, str]]:
    """(key, its namespace, the range it lies in, that range's owner) for every admitted key
    inside a range another namespace owns and does not share with it."""
    found = []
    for key, claimants in state.claims.items():
        for endpoint in claimants.values():
            for identity, entry in state.tenancy.identities.items():
                owner = entry.owner
                if owner in (None, endpoint.namespace) or endpoint.namespace in entry.shared_with:
                    continue
                if f"{key}/".startswith(identity):  # the key's own name counts (CoreDNS)
                    found.append((key, endpoint.namespace, identity, owner))
    return found


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(default_format=st.sampled_from(FORMATS), history=events)
def test_no_key_is_admitted_inside_a_range_another_namespace_owns(
    default_format: Format, history: list[tuple[Any, ...]]
) -> None:
    state = DesiredState(Defaults(format=default_format), claims=ClaimPolicy(grace=1.0))
    clock = [0.0]
    for event in history:
        apply(state, event, clock)
        assert intrusions(state) == [], event
