"""The etcd reachability check's answer follows etcd (the status writer re-marks every
registration's status when it changes, so Ready's reason follows etcd)."""

from __future__ import annotations

from etcd_registrar.health import EtcdCheck


async def test_reachable_is_the_latest_answer() -> None:
    answers = iter([True, True, False, False, True])
    seen: list[bool] = []

    async def ping() -> None:
        if not next(answers):
            raise ConnectionError("refused")

    check = EtcdCheck(ping, timeout=1)
    for _ in range(5):
        seen.append(await check.check())
    assert seen == [True, True, False, False, True]
    assert check.reachable and check.reason == "ok"
