"""A controller on the in-memory etcd (verified by tests/etcd_contract.py), for fast tests.

Its Kubernetes client points nowhere: these tests drive the controller with pod and
registration bodies and never call the API server (no sweep, no status loop)."""

from __future__ import annotations

from etcd_registrar.claimstore import ClaimStore
from etcd_registrar.controller import Controller
from etcd_registrar.memory import MemoryEtcd
from etcd_registrar.term import Term
from tests.listeners import offline_controller


def memory_controller(etcd: MemoryEtcd, term: Term, *, readiness_gate: bool = True) -> Controller:
    claims = ClaimStore(etcd, term, "t")
    return offline_controller(etcd, term, claims, "t", readiness_gate=readiness_gate)


async def values(etcd: MemoryEtcd) -> dict[str, str]:
    return {kv.key: kv.value for kv in (await etcd.get_prefix("/services/"))[0]}
