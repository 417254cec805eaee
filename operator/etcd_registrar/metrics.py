"""Prometheus metrics, named per pipeline stage (as ExternalDNS does).

Names follow the Prometheus conventions: the `etcd_registrar_` namespace, base units in the
name (`_seconds`), `_total` on counters, no unit on plain counts. docs/metrics.md documents
each one; this module is its source. Values that are state (keys held per registration,
whether etcd answers) are read when scraped, from `watch_state`, so they cannot drift from
what the operator holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from etcd_registrar import __version__
from etcd_registrar.source import ServiceId

_NS = "etcd_registrar"

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series

build_info = Gauge(
    f"{_NS}_build_info", "Always 1; the version of the running operator.", ["version"]
)
transitions = Counter(
    f"{_NS}_pod_transitions_total",
    "Pod events that added (register) or removed (deregister) keys of a pod.",
    ["change"],
)
propagation = Histogram(
    f"{_NS}_propagation_seconds",
    "From a pod event being seen to the etcd transaction that carries its change committing.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
etcd_requests = Histogram(
    f"{_NS}_etcd_request_duration_seconds",
    "etcd request latency by operation (txn = writes, get = key reads, range = prefix reads, "
    "lease_grant, lease_revoke, lease_time_to_live, campaign = leader election, "
    "probe = doctor's may-write check, ping = readiness check, status), "
    "failed requests included.",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
etcd_errors = Counter(
    f"{_NS}_etcd_request_errors_total",
    "Failed etcd requests by operation and gRPC status code (e.g. UNAVAILABLE).",
    ["operation", "code"],
)
txn_ops = Histogram(
    f"{_NS}_etcd_txn_operations",
    "Puts and deletes per committed write transaction (etcd allows 128).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
keepalive_failures = Counter(
    f"{_NS}_lease_keepalive_failures_total",
    "Times the lease keepalive stream broke and had to be reopened.",
)
lease_regrants = Counter(
    f"{_NS}_leases_lost_total",
    "Leases found expired or gone (etcd outage past the TTL, wiped etcd); their keys are "
    "re-written on a newly granted lease.",
)
leases = Gauge(f"{_NS}_leases", "Leases the operator holds.")
sweeps = Counter(f"{_NS}_sweeps_total", "Level-triggered sweeps completed.")
sweep_seconds = Counter(
    f"{_NS}_sweep_seconds_total", "Seconds spent sweeping (over sweeps_total: a sweep's length)."
)
sweep_errors = Counter(f"{_NS}_sweep_errors_total", "Sweeps that failed (retried next resync).")
drift = Counter(
    f"{_NS}_drift_repaired_total",
    "Keys a sweep found missing, changed or orphaned in etcd and put or deleted.",
)
conflicts = Gauge(
    f"{_NS}_key_conflicts", "Keys claimed by more than one pod (the oldest pod keeps the key)."
)
events_dropped = Counter(
    f"{_NS}_events_dropped_total",
    "Events not posted, by type: Normal ones over their rate limit (bulk changes), Warnings "
    "over their namespace's share of the queue (posted again after the next sweep).",
    ["type"],
)
invalid = Counter(
    f"{_NS}_invalid_inputs_total",
    "Inputs refused: bad pod annotations or ports (kind=pod), invalid ServiceRegistrations "
    "(kind=registration).",
    ["kind"],
)

loop_crashes = Counter(
    f"{_NS}_loop_crashes_total",
    "Unexpected exceptions in a long-running loop; it is restarted with backoff (a loop that "
    "keeps crashing turns /healthz red).",
    ["loop"],
)
writes_refused = Counter(
    f"{_NS}_writes_refused_total",
    "Keys not written: etcd refused the operation (reason=refused: permission, size, ...) or "
    "another writer holds the key (reason=taken). Each is reported on its pod.",
    ["reason"],
)
gate_patches = Counter(
    f"{_NS}_readiness_gate_patches_total",
    "Patches of gated pods' etcd-registrar.io/registered condition, by result: True, False, "
    "gone (the pod was deleted or replaced), error (retried).",
    ["result"],
)
gates_waiting = Gauge(
    f"{_NS}_readiness_gates_waiting",
    "Gated pods whose etcd-registrar.io/registered condition is not True (counted every 5 s).",
)

leader = Gauge(f"{_NS}_leader", "1 while this replica leads (writes to etcd), else 0.")
leadership_changes = Counter(
    f"{_NS}_leadership_changes_total",
    "Times this replica became leader or stopped leading (each is logged with the reason).",
)
fenced_writes = Counter(
    f"{_NS}_fenced_writes_total",
    "Writes etcd refused because this replica no longer held the leader key.",
)
scope_mismatch = Gauge(
    f"{_NS}_scope_mismatch",
    "1 while this replica refuses to run beside another installation with the same owner "
    "id (misconfiguration: /readyz fails), else 0.",
)
foreign_cluster = Gauge(
    f"{_NS}_foreign_cluster",
    "1 while another cluster uses this owner id in the same etcd (this replica stands "
    "aside: /readyz fails), else 0.",
)

EndpointCounts = Callable[[], Mapping[ServiceId, int]]


class _State(Collector):
    """Gauges computed at scrape time from the operator's own state."""

    def __init__(self, endpoints: EndpointCounts, etcd_reachable: Callable[[], bool]) -> None:
        self.endpoints, self.etcd_reachable = endpoints, etcd_reachable

    def collect(self) -> Iterator[Metric]:
        held = GaugeMetricFamily(
            f"{_NS}_endpoints",
            "Keys held in etcd per registration (namespace, service).",
            labels=["namespace", "service"],
        )
        for (namespace, service), count in sorted(self.endpoints().items()):
            held.add_metric([namespace, service], count)
        yield held
        yield GaugeMetricFamily(
            f"{_NS}_etcd_reachable",
            "1 while etcd answers the operator's periodic readiness check, else 0.",
            value=1 if self.etcd_reachable() else 0,
        )


_state: _State | None = None


def watch_state(endpoints: EndpointCounts, etcd_reachable: Callable[[], bool]) -> None:
    """Export the state gauges from these callables (replaces an earlier registration)."""
    global _state
    if _state is not None:
        prometheus_client.REGISTRY.unregister(_state)
    _state = _State(endpoints, etcd_reachable)
    prometheus_client.REGISTRY.register(_state)


build_info.labels(__version__).set(1)
