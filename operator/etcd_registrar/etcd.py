"""The etcd adapter: every etcd call of the project goes through here.

Built on aetcd's generated gRPC stubs with our own ``grpc.aio`` channels, which cover what
aetcd 1.0's client lacks: TLS and client certificates, re-authentication when
the token expires, one long-lived LeaseKeepAlive stream, fast reconnects after an outage,
and a channel per member of a TLS cluster, each verifying that member's own certificate.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from aetcd import rpc

from etcd_registrar import metrics

logger = logging.getLogger(__name__)

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
_WATCH_RETRY_DELAY = 0.5  # between re-creations of a broken watch (etcd may be refusing)

# Fail over between members as etcd's Go client does. Plain http IP endpoints share one
# channel that spreads calls round-robin over them. Otherwise (TLS, or host names) each member
# gets a channel of its own, named by its endpoint: gRPC checks a server's certificate against
# its channel's target, so a multi-address channel would check every member against one
# name. Calls go to one member until it fails at the transport (UNAVAILABLE: down, or "no
# leader"; or a deadline), then to the next; streams broken that way reopen on the next.
# A read refused as UNAVAILABLE is tried again at once, which puts it on another member
# (the channel's retry policy, then the next member). Writes (Txn, LeaseGrant) are not
# retried here: their UNAVAILABLE may come after etcd applied them, and a campaign or a put
# guarded on absence would then find its own key; the caller retries, on the next member.
# "hasleader" metadata makes a member without a leader refuse at once instead of letting
# calls hang until their deadline, and makes it cancel our keepalive and watch streams when
# it loses its leader, so they move too.
_REQUIRE_LEADER = (("hasleader", "true"),)
_RETRIED = {
    "KV": ("Range",),
    "Lease": ("LeaseRevoke", "LeaseKeepAlive", "LeaseTimeToLive"),
    "Watch": ("Watch",),
    "Maintenance": ("Status",),
}
_IDEMPOTENT = {method for methods in _RETRIED.values() for method in methods}
_MEMBER_FAILED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# gRPC's own word for a transport that broke under a stream (a member killed mid-watch): not
# etcd's answer, so as retryable as UNAVAILABLE.
_TRANSPORT_BROKE = "Internal error from Core"
_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [
                {"service": f"etcdserverpb.{service}", "method": method}
                for service, methods in _RETRIED.items()
                for method in methods
            ],
            "retryPolicy": {
                # ~10, 30, 90, 270 ms apart: the next member is tried almost at once, and
                # a lone member gets ~0.4 s to elect a leader
                "maxAttempts": 5,
                "initialBackoff": "0.01s",
                "maxBackoff": "0.3s",
                "backoffMultiplier": 3,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}

# Reconnect within ~1 s after an outage (default gRPC backoff took 19 s after a 30 s outage)
# and detect a dead connection by HTTP/2 pings.
_CHANNEL_OPTIONS = (
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


class EtcdError(Exception):
    """An etcd call failed; `retryable` says whether trying again later may help."""

    retryable = False


class EtcdUnavailable(EtcdError):
    retryable = True


class LeaseNotFound(EtcdError):
    """A lease the operator used no longer exists (expired, revoked, or etcd was wiped)."""


class Fenced(EtcdError):
    """etcd refused a write because the writer no longer holds the leader key it was
    fenced by: another replica leads now."""


@dataclass(frozen=True, slots=True)
class Fence:
    """The leader key a write depends on, and the create revision it had when we won it:
    a write fenced by it applies only while that very key still exists."""

    key: str
    revision: int

    def compare(self) -> Any:
        return rpc.Compare(
            key=self.key.encode(),
            target=rpc.Compare.CREATE,
            result=rpc.Compare.EQUAL,
            create_revision=self.revision,
        )


class WatchCompacted(EtcdError):
    """etcd compacted away the history a watch was to start from: re-read, then watch anew."""


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    endpoints: Sequence[str] = ("http://127.0.0.1:2379",)
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None  # read at each login: a rotated password is picked up
    timeout: float = 5.0

    def __post_init__(self) -> None:
        check_tls(self.endpoints, self.ca, self.cert, self.key)


def check_tls(
    endpoints: Sequence[str], ca: Path | None, cert: Path | None, key: Path | None
) -> None:
    """Refuse a client certificate that would go unused: TLS is on for https:// endpoints
    or a CA, and without either the connection would silently be plaintext."""
    plaintext = all(e.startswith("http://") or "://" not in e for e in endpoints)
    if (cert or key) and plaintext and not ca:
        raise ValueError(
            "--etcd-cert/--etcd-key are set but the etcd endpoints are http:// and no "
            "--etcd-ca is given, so the connection would be plaintext: use https:// "
            "endpoints (and --etcd-ca unless the system CAs sign etcd's certificate)"
        )


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: str
    lease: int
    mod_revision: int
    create_revision: int = 0


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: str  # "PUT" or "DELETE"
    key: str
    value: str
    revision: int
    create_revision: int = 0  # the key's, on a PUT


ABSENT = 0  # PutOp.expect_lease: put only while the key does not exist


@dataclass(frozen=True, slots=True)
class PutOp:
    key: str
    value: str
    lease: int = 0
    # None: put whatever holds the key. ABSENT: only while no one holds it. A lease id: only
    # while the key is still attached to that lease (ours). A guarded put never overwrites
    # another writer's key.
    expect_lease: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteOp:
    key: str
    lease: int = 0  # when set: delete only while the key is still attached to this lease


Op = PutOp | DeleteOp


@dataclass(frozen=True, slots=True)
class TxnResult:
    """The revision a transaction got, and its guarded ops whose guard did not hold: op index
    -> what etcd holds at that key now (None: nothing). `dry_run`: recorded, not applied."""

    revision: int
    refused: dict[int, KV | None]
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    ttl: int  # seconds left, rounded down: 0 is a live lease with under a second left
    granted: int
    keys: list[str]

    @property
    def alive(self) -> bool:
        return self.ttl >= 0  # etcd answers -1 for a lease it does not have


def grpc_targets(endpoints: Sequence[str]) -> tuple[list[str], bool]:
    """The gRPC targets for the endpoint URLs, a channel each, and whether they use TLS.

    Several plain http IP endpoints become one multi-address target (``ipv4:a:2379,b:2379``)
    that gRPC balances over. Otherwise every endpoint is a target of its own (a host name is
    resolved by gRPC's DNS resolver): over TLS each member's certificate is checked against
    its own name or IP.
    """
    urls = [urlsplit(e if "://" in e else f"http://{e}") for e in endpoints]
    if not urls:
        raise ValueError("no etcd endpoints configured")
    schemes = {u.scheme for u in urls}
    if schemes - {"http", "https"} or len(schemes) > 1:
        raise ValueError(f"etcd endpoints must all be http:// or all https://: {list(endpoints)}")
    secure = schemes == {"https"}
    hosts = [(u.hostname or "127.0.0.1", u.port or 2379) for u in urls]
    targets = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in hosts]
    family = _ip_family([h for h, _ in hosts])
    if len(hosts) == 1 or secure or family is None:
        return targets, secure
    return [f"{family}:" + ",".join(targets)], secure


def _ip_family(hosts: Sequence[str]) -> str | None:
    """The family of `hosts` (ipv4 or ipv6) if all are IP addresses of one, else None."""
    try:
        families = {ipaddress.ip_address(h).version for h in hosts}
    except ValueError:
        return None
    return {frozenset({4}): "ipv4", frozenset({6}): "ipv6"}.get(frozenset(families))


# etcd's answers that mean "try again": a rate limit, and a token whose auth revision is
# older than the auth store (JWT tokens after any user or role change; etcd's Go client
# re-authenticates on it, as on an expired token).
_TOO_MANY_REQUESTS = "too many requests"
_AUTH_OLD_REVISION = "revision of auth store is old"


def _map_error(exc: grpc.aio.AioRpcError) -> EtcdError:
    code, details = exc.code(), exc.details() or ""
    if "lease not found" in details:
        return LeaseNotFound(details)
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAUTHENTICATED,
    ) or any(
        text in details for text in (_TOO_MANY_REQUESTS, _AUTH_OLD_REVISION, _TRANSPORT_BROKE)
    ):
        return EtcdUnavailable(f"{code.name}: {details}")
    return EtcdError(f"{code.name}: {details}")


def _token_stale(exc: grpc.aio.AioRpcError) -> bool:
    details = exc.details() or ""
    return (
        exc.code() == grpc.StatusCode.UNAUTHENTICATED
        or "auth token" in details
        or _AUTH_OLD_REVISION in details
    )


class Member:
    """One gRPC channel and its stubs: a member of the etcd cluster, or all of them behind
    one balanced channel."""

    def __init__(self, target: str, channel: grpc.aio.Channel) -> None:
        self.target, self.channel = target, channel
        self.kv = rpc.KVStub(channel)
        self.lease = rpc.LeaseStub(channel)
        self.watcher = rpc.WatchStub(channel)
        self.maintenance = rpc.MaintenanceStub(channel)
        self.auth = rpc.AuthStub(channel)


class Etcd:
    """An etcd v3 client with the handful of calls the registrar needs."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._members: list[Member] = []
        self._current = 0  # the member calls go to
        self._tls_files: tuple[float, ...] = ()
        self._metadata: tuple[tuple[str, str], ...] = ()

    @property
    def member(self) -> Member:
        """The member calls go to now."""
        return self._members[self._current]

    async def connect(self) -> None:
        targets, secure = grpc_targets(self.config.endpoints)
        self._tls_files = self._tls_stamp()
        if secure or self.config.ca:
            creds = grpc.ssl_channel_credentials(
                _read(self.config.ca), _read(self.config.key), _read(self.config.cert)
            )
            channels = [
                grpc.aio.secure_channel(t, creds, options=_CHANNEL_OPTIONS) for t in targets
            ]
        else:
            channels = [grpc.aio.insecure_channel(t, options=_CHANNEL_OPTIONS) for t in targets]
        self._members = [Member(t, c) for t, c in zip(targets, channels, strict=True)]

    async def close(self) -> None:
        members, self._members = self._members, []
        for member in members:
            await member.channel.close()

    def _failed(self, member: Member, exc: grpc.aio.AioRpcError) -> None:
        """Move on from `member` if it failed at the transport: to the next member, unless
        another call has moved on already."""
        broke = exc.code() in _MEMBER_FAILED or _TRANSPORT_BROKE in (exc.details() or "")
        if not broke or len(self._members) < 2:
            return
        if self._members[self._current] is member:
            self._current = (self._current + 1) % len(self._members)
            logger.warning(
                "etcd member %s failed (%s); going on with %s",
                member.target,
                exc.code().name,
                self.member.target,
            )

    def _tls_stamp(self) -> tuple[float, ...]:
        """When the TLS files last changed: a rotated certificate shows here."""
        files = (self.config.ca, self.config.cert, self.config.key)
        return tuple(path.stat().st_mtime if path and path.exists() else 0.0 for path in files)

    async def _reconnect_if_rotated(self) -> bool:
        """Reconnect with the TLS files on disk if they changed since we connected (a
        certificate rotated, the server no longer takes the old one); True if we did."""
        if not self._members or self._tls_stamp() == self._tls_files:
            return False
        logger.info("etcd TLS files changed on disk; reconnecting with them")
        old = self._members
        await self.connect()
        for member in old:
            await member.channel.close()
        return True

    async def _authenticate(self) -> None:
        if self.config.username is None:
            return
        password = self.config.password or ""
        if self.config.password_file is not None:
            password = self.config.password_file.read_text().strip()
        member = self.member
        try:
            response = await member.auth.Authenticate(
                rpc.AuthenticateRequest(name=self.config.username, password=password),
                timeout=self.config.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            self._failed(member, exc)
            raise _map_error(exc) from None
        self._metadata = (("token", response.token),)

    async def _call(self, rpc_name: str, request: Any, operation: str | None = None) -> Any:
        """One unary call, e.g. ``kv.Range``; re-authenticates once when the token expired.
        A read refused as UNAVAILABLE is tried once on each other member.

        Timed and counted under `operation` (default: the RPC name in snake case)."""
        stub, name = rpc_name.split(".")
        operation = operation or _snake(name)
        if not self._members:
            await self.connect()
        if self.config.username and not self._metadata:
            await self._authenticate()
        relogged = rotated = False
        moves = len(self._members) - 1 if name in _IDEMPOTENT else 0
        while True:
            member = self.member
            started = time.monotonic()
            try:
                return await getattr(getattr(member, stub), name)(
                    request, timeout=self.config.timeout, metadata=_REQUIRE_LEADER + self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                metrics.etcd_errors.labels(operation, exc.code().name).inc()
                if _token_stale(exc) and self.config.username and not relogged:
                    relogged = True
                    await self._authenticate()
                    continue
                unavailable = exc.code() == grpc.StatusCode.UNAVAILABLE
                if unavailable and not rotated:
                    rotated = True
                    if await self._reconnect_if_rotated():
                        continue
                self._failed(member, exc)
                if unavailable and moves > 0:
                    moves -= 1
                    continue
                raise _map_error(exc) from None
            finally:
                metrics.etcd_requests.labels(operation).observe(time.monotonic() - started)

    # --- KV -------------------------------------------------------------------------------

    async def txn(self, ops: Sequence[Op], fence: Fence | None = None) -> TxnResult:
        """Apply up to 128 puts/deletes in one transaction; guarded ops apply only where
        their guard holds (each on its own), the others regardless. With `fence`, nothing
        applies unless its leader key is still ours (Fenced)."""
        if len(ops) > MAX_TXN_OPS:
            raise ValueError(f"a transaction holds at most {MAX_TXN_OPS} operations")
        request = rpc.TxnRequest(
            compare=[fence.compare()] if fence else [], success=[_request_op(op) for op in ops]
        )
        response = await self._call("kv.Txn", request)
        if fence is not None and not response.succeeded:
            raise Fenced(f"{fence.key} is no longer ours (created at revision {fence.revision})")
        refused: dict[int, KV | None] = {}
        for n, (op, item) in enumerate(zip(ops, response.responses, strict=True)):
            if _guarded(op) and not item.response_txn.succeeded:
                found = item.response_txn.responses[0].response_range.kvs
                refused[n] = _kv(found[0]) if found else None
        return TxnResult(int(response.header.revision), refused)

    async def get_prefix(self, prefix: str, *, keys_only: bool = False) -> tuple[list[KV], int]:
        """All keys under `prefix`, and the revision of the read."""
        start = prefix.encode()
        request = rpc.RangeRequest(key=start, range_end=_prefix_end(start), keys_only=keys_only)
        response = await self._call("kv.Range", request)
        return [_kv(kv) for kv in response.kvs], int(response.header.revision)

    async def get_many(self, keys: Iterable[str]) -> dict[str, KV]:
        """Current values of `keys` (absent keys are left out), 128 reads per transaction."""
        found: dict[str, KV] = {}
        batch = list(keys)
        for start in range(0, len(batch), MAX_TXN_OPS):
            chunk = batch[start : start + MAX_TXN_OPS]
            request = rpc.TxnRequest(
                success=[
                    rpc.RequestOp(request_range=rpc.RangeRequest(key=k.encode())) for k in chunk
                ]
            )
            response = await self._call("kv.Txn", request, operation="get")
            for item in response.responses:
                for kv in item.response_range.kvs:
                    found[_text(kv.key)] = _kv(kv)
        return found

    async def put(self, key: str, value: str, lease: int = 0, fence: Fence | None = None) -> int:
        return (await self.txn([PutOp(key, value, lease)], fence)).revision

    async def campaign(self, key: str, value: str, lease: int) -> tuple[bool, KV | None]:
        """Create `key` on `lease` unless it exists: (True, ours) or (False, the holder's)."""
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=key.encode(),
                    target=rpc.Compare.CREATE,
                    result=rpc.Compare.EQUAL,
                    create_revision=0,
                )
            ],
            success=[
                rpc.RequestOp(
                    request_put=rpc.PutRequest(key=key.encode(), value=value.encode(), lease=lease)
                ),
                rpc.RequestOp(request_range=rpc.RangeRequest(key=key.encode())),
            ],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key.encode()))],
        )
        response = await self._call("kv.Txn", request, operation="campaign")
        found = response.responses[-1].response_range.kvs
        return bool(response.succeeded), (_kv(found[0]) if found else None)

    async def resign(self, fence: Fence) -> None:
        """Delete the leader key if it is still the one `fence` names."""
        await self.txn([DeleteOp(fence.key)], fence)

    async def delete(self, key: str) -> int:
        return (await self.txn([DeleteOp(key)])).revision

    # --- leases ---------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        response = await self._call("lease.LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl))
        if response.error:
            raise EtcdError(f"lease grant refused: {response.error}")
        return int(response.ID)

    async def revoke(self, lease: int) -> None:
        await self._call("lease.LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease))

    async def time_to_live(self, lease: int) -> LeaseInfo:
        """Remaining and granted TTL of `lease`, and the keys attached to it."""
        request = rpc.LeaseTimeToLiveRequest(ID=lease, keys=True)
        response = await self._call("lease.LeaseTimeToLive", request)
        return LeaseInfo(
            int(response.TTL), int(response.grantedTTL), [_text(k) for k in response.keys]
        )

    async def keepalive_stream(self) -> KeepAliveStream:
        """A new keepalive stream, logged in: a stream opened with a token etcd no longer
        takes (expired, or the password changed) is refused, and the leases would lapse.
        Opened on the member in use; one that breaks it moves us on to the next."""
        if not self._members:
            raise EtcdUnavailable("not connected")
        if self.config.username and not self._metadata:
            await self._authenticate()
        member = self.member
        call = member.lease.LeaseKeepAlive(metadata=_REQUIRE_LEADER + self._metadata)
        return KeepAliveStream(call, functools.partial(self._stream_broke, member))

    def _stream_broke(self, member: Member, exc: grpc.aio.AioRpcError) -> None:
        if _token_stale(exc):
            self._metadata = ()  # the next stream logs in again
        self._failed(member, exc)

    # --- watch and status -----------------------------------------------------------------

    async def watch_prefix(
        self, prefix: str, start_revision: int
    ) -> AsyncGenerator[WatchEvent, None]:
        """Stream PUT/DELETE events under `prefix` from `start_revision` on.

        A watch broken by a disconnect (or moved off a member that lost its leader) resumes
        from the revision after the last event; raises WatchCompacted once etcd no longer
        holds the history it would resume from."""
        if not self._members:
            await self.connect()
        start = prefix.encode()
        while True:
            create = rpc.WatchCreateRequest(
                key=start, range_end=_prefix_end(start), start_revision=start_revision
            )
            # A lone channel: after a disconnect, wait for it instead of failing. With several
            # members, fail, and resume on the next one.
            member = self.member
            call = member.watcher.Watch(
                metadata=_REQUIRE_LEADER + self._metadata, wait_for_ready=len(self._members) == 1
            )
            try:
                await call.write(rpc.WatchRequest(create_request=create))
                async for response in call:
                    if response.compact_revision:
                        raise WatchCompacted(
                            f"etcd compacted its history up to revision "
                            f"{response.compact_revision}, so the watch of {prefix!r} from "
                            f"revision {start_revision} missed events: read it again"
                        )
                    if response.canceled:
                        raise EtcdError(f"etcd cancelled the watch: {response.cancel_reason}")
                    for event in response.events:
                        kind = "DELETE" if event.type == rpc.Event.DELETE else "PUT"
                        kv = event.kv
                        yield WatchEvent(
                            kind,
                            _text(kv.key),
                            _text(kv.value),
                            kv.mod_revision,
                            kv.create_revision,
                        )
                        start_revision = kv.mod_revision + 1
            except grpc.aio.AioRpcError as exc:
                error = _map_error(exc)
                if not error.retryable:
                    raise error from None
                self._failed(member, exc)
                logger.warning("watch broke (%s); resuming at revision %d", error, start_revision)
                await asyncio.sleep(_WATCH_RETRY_DELAY)
            finally:
                call.cancel()

    async def may_write(self, key: str) -> None:
        """Ask etcd whether we may read and write `key`, writing nothing: etcd checks the
        permissions of both branches of a transaction before its compare, and this compare
        (version < 0) never holds. Raises EtcdError ("permission denied") if not."""
        never = rpc.Compare(
            key=key.encode(), target=rpc.Compare.VERSION, result=rpc.Compare.LESS, version=0
        )
        probe = rpc.RequestOp(request_put=rpc.PutRequest(key=key.encode(), value=b""))
        await self._call("kv.Txn", rpc.TxnRequest(compare=[never], success=[probe]), "probe")

    async def ping(self, key: str) -> None:
        """Read `key` (count only), linearizably: succeeds iff etcd serves requests (it has a
        quorum). Needs only read access to `key`; Status needs root on etcd 3.6 with auth."""
        request = rpc.RangeRequest(key=key.encode(), count_only=True)
        await self._call("kv.Range", request, operation="ping")

    async def version(self) -> str:
        response = await self._call("maintenance.Status", rpc.StatusRequest())
        return str(response.version)


class KeepAliveStream:
    """One LeaseKeepAlive bidi stream shared by every lease (not one stream per refresh)."""

    def __init__(self, call: Any, broke: Callable[[grpc.aio.AioRpcError], None]) -> None:
        self._call, self._broke = call, broke  # `broke`: tells the client what broke it

    def _error(self, exc: grpc.aio.AioRpcError) -> EtcdError:
        self._broke(exc)
        return _map_error(exc)

    async def send(self, lease: int) -> None:
        try:
            await self._call.write(rpc.LeaseKeepAliveRequest(ID=lease))
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None

    async def receive(self) -> tuple[int, int]:
        """(lease id, remaining TTL); TTL <= 0 means etcd no longer has the lease."""
        try:
            response = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        if response is grpc.aio.EOF:
            raise EtcdUnavailable("keepalive stream closed")
        return int(response.ID), int(response.TTL)

    def close(self) -> None:
        self._call.cancel()


@functools.cache
def _snake(name: str) -> str:
    """``LeaseTimeToLive`` -> ``lease_time_to_live``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path else None


def _guarded(op: Op) -> bool:
    return bool(op.lease) if isinstance(op, DeleteOp) else op.expect_lease is not None


def _request_op(op: Op) -> Any:
    key = op.key.encode()
    if isinstance(op, PutOp):
        request = rpc.RequestOp(
            request_put=rpc.PutRequest(key=key, value=op.value.encode(), lease=op.lease)
        )
        expected = op.expect_lease
    else:
        request = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))
        expected = op.lease or None
    if expected is None:
        return request
    # A nested transaction (etcd >= 3.3) guards each op on its own: a key another writer has
    # taken since we last read it is left alone (and read back, so we learn who holds it),
    # and the rest of the batch still runs. One op per branch: etcd leaves a nested txn only
    # the ops the outer one does not use.
    if expected == ABSENT:
        guard = rpc.Compare(
            key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0
        )
    else:
        guard = rpc.Compare(
            key=key, target=rpc.Compare.LEASE, result=rpc.Compare.EQUAL, lease=expected
        )
    read_back = rpc.RequestOp(request_range=rpc.RangeRequest(key=key))
    return rpc.RequestOp(
        request_txn=rpc.TxnRequest(compare=[guard], success=[request], failure=[read_back])
    )


def _prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with `prefix`."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\0"  # the whole keyspace
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _text(data: bytes) -> str:
    """etcd holds bytes: another writer's may not be UTF-8, and must not break a read."""
    return data.decode(errors="backslashreplace")


def _kv(kv: Any) -> KV:
    return KV(
        _text(kv.key),
        _text(kv.value),
        int(kv.lease),
        int(kv.mod_revision),
        int(kv.create_revision),
    )
