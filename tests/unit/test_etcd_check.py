"""The etcd reachability check tells when reachability changes (App re-marks every
registration's status then, so Ready's reason follows etcd: EtcdUnavailable or not)."""

from __future__ import annotations

from etcd_registrar.health import EtcdCheck


async def test_each_change_of_reachability_is_told_once() -> None:
    answers = iter([True, True, False, False, True])
    changes: list[bool] = []

    async def ping() -> None:
        if not next(answers):
            raise ConnectionError("refused")

    check = EtcdCheck(ping, timeout=1)
    check.on_change = lambda: changes.append(check.reachable)
    for _ in range(5):
        await check.check()
    assert changes == [True, False, True]
