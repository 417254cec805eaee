"""How etcd's error answers are classified: retry later, re-authenticate, or refuse."""

from __future__ import annotations

import grpc
import pytest

from etcd_registrar.etcd import EtcdUnavailable, LeaseNotFound, _map_error, _token_stale


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("code", "details", "retryable", "relogin"),
    [
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: leader changed", True, False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests", True, False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "mvcc: database space exceeded", False, False),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old", True, True),
        (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", True, True),
        (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied", False, False),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large", False, False),
        (grpc.StatusCode.INTERNAL, "Internal error from Core", True, False),  # a member killed
        (grpc.StatusCode.INTERNAL, "etcdserver: corrupt cluster", False, False),
    ],
)  # fmt: skip
def test_error_classes(code: grpc.StatusCode, details: str, retryable: bool, relogin: bool) -> None:
    error = rpc_error(code, details)
    assert _map_error(error).retryable is retryable
    assert isinstance(_map_error(error), EtcdUnavailable) is retryable
    assert _token_stale(error) is relogin


def test_a_lost_lease_is_its_own_error() -> None:
    error = _map_error(
        rpc_error(grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
    )
    assert isinstance(error, LeaseNotFound)
