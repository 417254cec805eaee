"""Prometheus metrics, named per pipeline stage (as ExternalDNS does)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_NS = "etcd_registrar"

endpoints = Gauge(
    f"{_NS}_endpoints", "Keys currently held in etcd, per registration.", ["namespace", "service"]
)
transitions = Counter(
    f"{_NS}_pod_transitions_total", "Pod events that changed the desired keys.", ["change"]
)
propagation = Histogram(
    f"{_NS}_propagation_seconds",
    "From a pod event being seen to its etcd write being committed.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
etcd_requests = Histogram(
    f"{_NS}_etcd_request_seconds",
    "etcd request latency by operation.",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
etcd_errors = Counter(f"{_NS}_etcd_errors_total", "Failed etcd requests.", ["operation"])
txn_ops = Histogram(
    f"{_NS}_txn_operations",
    "Operations per etcd transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
keepalive_failures = Counter(
    f"{_NS}_lease_keepalive_failures_total", "Keepalive streams that broke."
)
lease_regrants = Counter(f"{_NS}_lease_lost_total", "Leases found lost and replaced.")
leases = Gauge(f"{_NS}_leases", "Leases the operator holds.")
sweeps = Counter(f"{_NS}_sweeps_total", "Level-triggered sweeps completed.")
drift = Counter(f"{_NS}_drift_repaired_total", "Keys the sweep found wrong and repaired.")
conflicts = Gauge(f"{_NS}_conflicts", "Keys claimed by more than one pod.")
invalid = Counter(
    f"{_NS}_invalid_inputs_total", "Inputs refused (annotations, registrations).", ["kind"]
)
