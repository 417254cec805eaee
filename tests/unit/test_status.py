"""ServiceRegistration status (docs/crd.md#conditions): its conditions, from the desired
state and what planning and etcd found, and their transition times."""

from __future__ import annotations

from typing import Any

import pytest

from etcd_registrar.desired import DesiredState
from etcd_registrar.plan import Conflict
from etcd_registrar.source import Defaults, RegistrationId
from etcd_registrar.status import Condition, Findings, conditions, registration_status
from tests.unit.builders import endpoint, opt_in, pod_body, registration_body

KEY = "/services/goods/goods-abc"
NOTHING = Findings(held=set(), conflicts={}, taken=set(), refused={})
HELD = Findings(held={KEY}, conflicts={}, taken=set(), refused={})
INVALID = {"key": "{prefix}/{foo}"}


def shop(*registrations: tuple[str, dict[str, Any]], intruder: bool = False) -> DesiredState:
    """The pod goods-abc of namespace shop, opted into goods, and `registrations` (name,
    spec); with `intruder`, namespace team-x has claimed the goods range first."""
    state = DesiredState(Defaults())
    if intruder:
        state.on_pod(None, pod_body(name="x", namespace="team-x", annotations=opt_in()))
    state.on_pod(None, pod_body(annotations=opt_in()))
    for name, spec in registrations:
        state.on_registration("ADDED", registration_body(spec, name=name))
    return state


GOODS: tuple[str, dict[str, Any]] = ("goods", {})
CONFLICT = Conflict(KEY, endpoint(KEY, pod="goods-abc"), (endpoint(KEY, pod="goods-b"),))
NOT_YET = "1 of 1 keys not yet written to etcd"
TAKEN = (
    "1 keys already exist in etcd, written by another client, and are not overwritten, "
    f"e.g. {KEY}: delete them or use another prefix"
)
NOT_OWNER = (
    "goods: the keys under /services/goods/ belong to namespace team-x, so this namespace "
    "gets none there: ask team-x to add shop to spec.shareWith of its ServiceRegistration, "
    "or use another service name, prefix or key template"
)


@pytest.mark.parametrize(
    ("state", "of", "found", "expected"),
    [
        pytest.param(
            shop(GOODS),
            "goods",
            HELD,
            [("Ready", True, "Synced", "1 keys held in etcd")],
            id="ready",
        ),
        pytest.param(
            shop(GOODS), "goods", NOTHING, [("Ready", False, "Pending", NOT_YET)], id="pending"
        ),
        pytest.param(
            shop(GOODS),
            "goods",
            Findings(held=set(), conflicts={}, taken=set(), refused={}, etcd_reachable=False),
            [("Ready", False, "EtcdUnavailable", f"{NOT_YET}: etcd is not reachable")],
            id="etcd-unavailable",
        ),
        pytest.param(
            shop(GOODS),
            "goods",
            Findings(held=set(), conflicts={}, taken=set(), refused={KEY: "too large"}),
            [("Ready", False, "EtcdRefused", f"etcd refused 1 keys, e.g. {KEY}: too large")],
            id="refused",
        ),
        pytest.param(
            shop(("goods", INVALID)),
            "goods",
            NOTHING,
            [
                ("Ready", False, "InvalidSpec", "{error}"),
                ("InvalidSpec", True, "InvalidSpec", "{error}"),
            ],
            id="invalid",
        ),
        pytest.param(
            shop(GOODS, ("other", {"service": "goods"})),
            "other",
            HELD,
            [
                (
                    "Ready",
                    False,
                    "Duplicate",
                    "service goods is governed by goods; this one is unused",
                ),
                ("InvalidSpec", True, "Duplicate", "service goods is already governed by goods"),
            ],
            id="duplicate",
        ),
        pytest.param(
            shop(GOODS),
            "goods",
            Findings(held={KEY}, conflicts={KEY: CONFLICT}, taken=set(), refused={}),
            [
                ("Ready", True, "Synced", "1 keys held in etcd"),
                (
                    "Conflict",
                    True,
                    "KeyConflict",
                    f"1 keys claimed by several pods, e.g. {KEY}: goods-abc kept, goods-b refused",
                ),
            ],
            id="key-conflict",
        ),
        pytest.param(
            shop(GOODS),
            "goods",
            Findings(held=set(), conflicts={}, taken={KEY}, refused={}),
            [("Ready", False, "KeyTaken", TAKEN), ("Conflict", True, "KeyTaken", TAKEN)],
            id="key-taken",
        ),
        pytest.param(
            shop(GOODS, intruder=True),
            "goods",
            NOTHING,
            [("Ready", False, "NotOwner", NOT_OWNER), ("Conflict", True, "NotOwner", NOT_OWNER)],
            id="not-owner",
        ),
    ],
)
def test_conditions(
    state: DesiredState, of: str, found: Findings, expected: list[Condition]
) -> None:
    reg = state.registrations[RegistrationId("shop", of)]
    error = reg.error or ""
    wanted = [(t, s, r, m.replace("{error}", error)) for t, s, r, m in expected]
    assert conditions(reg, state, found) == wanted


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    state = shop(GOODS)
    reg = state.registrations[RegistrationId("shop", "goods")]
    first = registration_status(reg, state, NOTHING, None, "t1")
    same = registration_status(reg, state, NOTHING, first, "t2")
    flipped = registration_status(reg, state, HELD, same, "t3")
    assert [c["lastTransitionTime"] for c in (*same["conditions"], *flipped["conditions"])] == [
        "t1",
        "t3",
    ]
    assert (first["endpoints"], flipped["endpoints"]) == (0, 1)
    assert flipped["observedGeneration"] == flipped["conditions"][0]["observedGeneration"] == 1
    assert (flipped["service"], flipped["format"]) == ("goods", "address")
