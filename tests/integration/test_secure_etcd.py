"""The operator against a secured etcd (issue #11): TLS client certificates and password
auth on, a role limited to the registry prefix and the operator's own bookkeeping, tokens
that expire after 2 idle seconds. Credentials rotated on disk are picked up without a
restart, and a write outside the role is refused and reported, never retried hot.

On the pinned etcd 3.6 only: older etcd releases did not check the permissions of operations
nested in a transaction (fixed in 2026, etcd-io/etcd#21689), and every write of the operator
is a guarded, nested one. Tried here: Debian's 3.4.23 and 3.6.4 let such a put through
whatever the role says; 3.6.16 refuses it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from etcd_registrar.config import Settings
from etcd_registrar.doctor import Report, _etcd_checks
from etcd_registrar.etcd import Etcd, EtcdConfig, Fence, Op, TxnResult
from etcd_registrar.leases import owner_keys
from etcd_registrar.registry import Registry
from etcd_registrar.term import Term
from tests.aio import eventually
from tests.harness import TlsEtcdServer, built_etcd_path
from tests.integration.test_registry import endpoints
from tests.listeners import Setbacks, setbacks
from tests.pki import Pki

pytestmark = pytest.mark.integration

OWNER = "sec"
ROLE_PREFIXES = ("/services/", owner_keys(OWNER))


class SecureEtcd(TlsEtcdServer):
    """A TLS etcd with password auth, whose tokens expire after 2 idle seconds."""

    def extra_args(self) -> list[str]:
        return [*super().extra_args(), "--auth-token-ttl=2"]

    def etcdctl(self, *args: str, input_: str | None = None) -> str:
        d = self.pki.dir
        done = subprocess.run(
            ["etcdctl", f"--endpoints={self.endpoint}", f"--cacert={self.pki.ca}",
             f"--cert={d / f'{self.client}.crt'}", f"--key={d / f'{self.client}.key'}", *args],
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
            check=True, input=input_,
        )  # fmt: skip
        return done.stdout


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def secure_etcd(pki: Pki) -> Iterator[SecureEtcd]:
    binary = built_etcd_path()
    if binary is None:
        pytest.fail("etcd 3.6 is not built: run `make tools`", pytrace=False)
    with SecureEtcd(pki, etcd_bin=binary) as server:
        server.start()
        server.etcdctl("user", "add", "root", "--no-password")
        server.etcdctl("user", "grant-role", "root", "root")
        server.etcdctl("role", "add", "registrar")
        for prefix in ROLE_PREFIXES:
            server.etcdctl("role", "grant-permission", "registrar", "--prefix=true",
                           "readwrite", prefix)  # fmt: skip
        server.etcdctl("user", "add", "registrar:pw-1")
        server.etcdctl("user", "grant-role", "registrar", "registrar")
        server.etcdctl("auth", "enable")
        yield server


@pytest.fixture
def settings(pki: Pki, secure_etcd: SecureEtcd, tmp_path: Path) -> Settings:
    """The operator's etcd settings, as its flags give them."""
    pki.issue("client", "registrar")
    password = tmp_path / "password"
    password.write_text("pw-1\n")
    return Settings(
        etcd_endpoints=[secure_etcd.endpoint],
        etcd_ca=pki.ca,
        etcd_cert=pki.dir / "client.crt",
        etcd_key=pki.dir / "client.key",
        etcd_username="registrar",
        etcd_password_file=password,
        etcd_timeout=2,
        owner_id=OWNER,
    )


@pytest.fixture
def config(settings: Settings) -> EtcdConfig:
    return settings.etcd()


@pytest.fixture
async def registry(config: EtcdConfig) -> AsyncIterator[Registry]:
    reg = Registry(Etcd(config), Term.alone(), Setbacks(), owner=OWNER)
    await reg.start()
    yield reg
    await reg.close()


def held(server: SecureEtcd) -> dict[str, str]:
    out = json.loads(server.etcdctl("get", "--prefix", "/services/", "-w", "json"))
    return {_b64(kv["key"]): _b64(kv["value"]) for kv in out.get("kvs") or []}


def _b64(text: str) -> str:
    import base64

    return base64.b64decode(text).decode()


async def test_registers_renews_and_deletes_through_expiring_tokens(
    registry: Registry, secure_etcd: SecureEtcd
) -> None:
    wanted = endpoints(3)
    await registry.submit(wanted, [])
    assert held(secure_etcd) == {e.key: e.value for e in wanted}
    await asyncio.sleep(2.5)  # idle past --auth-token-ttl: the token expires
    await registry.submit([], [wanted[0].key])  # a new login, transparently
    assert set(held(secure_etcd)) == {e.key for e in wanted[1:]}
    await asyncio.sleep(3 * wanted[0].ttl)  # renewed over 3 TTLs by the keepalive stream
    assert set(held(secure_etcd)) == {e.key for e in wanted[1:]}


async def test_a_write_outside_the_role_is_refused_once_and_reported(
    registry: Registry, secure_etcd: SecureEtcd
) -> None:
    calls = 0  # transactions that carried the forbidden key
    real_txn = registry.etcd.txn

    async def counting(ops: Sequence[Op], fence: Fence | None = None) -> TxnResult:
        nonlocal calls
        calls += any(op.key == "/forbidden/goods/pod-1" for op in ops)
        return await real_txn(ops, fence)

    registry.etcd.txn = counting  # type: ignore[method-assign]
    ok, outside = endpoints(2)
    outside = replace(outside, key="/forbidden/goods/pod-1")
    await registry.submit([ok, outside], [])
    refused = setbacks(registry).refused
    assert [write.key for write, _ in refused] == [outside.key]
    assert "permission denied" in refused[0][1]
    assert set(held(secure_etcd)) == {ok.key}
    assert calls == 2  # the batch, then its half: refused, reported, not retried


async def test_rotated_password_and_certificate_are_picked_up(
    registry: Registry, config: EtcdConfig, pki: Pki, secure_etcd: SecureEtcd
) -> None:
    first, second, third = endpoints(3)
    await registry.submit([first], [])
    # the password: changed in etcd and in the file; the next login reads the file
    secure_etcd.etcdctl("user", "passwd", "registrar", "--interactive=false", input_="pw-2")
    assert config.password_file is not None
    config.password_file.write_text("pw-2\n")
    await asyncio.sleep(2.5)  # the old token expires; a new one needs the new password
    await registry.submit([second], [])
    assert set(held(secure_etcd)) == {first.key, second.key}
    # the certificate: a client CA rollover. etcd now takes only certificates of the new CA
    # (the server's own certificate stays), and the operator's files are replaced on disk.
    pki.new_ca("ca2")
    pki.issue("client2", "registrar", ca="ca2")
    pki.issue("root2", "root", ca="ca2")
    secure_etcd.trusted, secure_etcd.client = pki.dir / "ca2.crt", "root2"
    assert config.cert is not None and config.key is not None
    config.cert.write_bytes((pki.dir / "client2.crt").read_bytes())
    config.key.write_bytes((pki.dir / "client2.key").read_bytes())
    await asyncio.to_thread(secure_etcd.restart)
    registry.submit([third], [])
    await eventually(lambda: third.key in registry.held, 20, "a write with the new certificate")
    assert set(held(secure_etcd)) >= {second.key, third.key}


async def test_doctor_names_the_missing_permission(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    report = Report()
    await _etcd_checks(
        report, settings.model_copy(update={"allowed_prefix": ["/services", "/forbidden"]})
    )
    out = capsys.readouterr().out
    assert "ok    etcd read/write under /services/" in out
    assert "FAIL  etcd read/write under /forbidden/: " in out and "permission denied" in out
    assert "readwrite /forbidden/" in out
    assert report.failures == 1
