"""`wait_for` and `assert_stays` for tests that run operator components on their own event
loop: the same polls with deadlines, but awaiting between polls so the loop keeps running.
A predicate may be a plain function or a coroutine function."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

Predicate = Callable[[], object] | Callable[[], Awaitable[object]]


async def _poll(
    predicate: Predicate,
    seconds: float,
    interval: float,
    until: bool,
    retry_on: tuple[type[Exception], ...] = (),
) -> Any:
    """Poll until the predicate's truth is `until` (return its value) or time is up (raise
    TimeoutError carrying the last value). An exception of `retry_on` counts as a falsy
    value (e.g. etcd unreachable while it restarts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
        except retry_on as exc:
            value = _Raised(exc)
        if bool(value) is until:
            return value
        if loop.time() >= deadline:
            raise TimeoutError(value)
        await asyncio.sleep(interval)


@overload
async def eventually(  # a coroutine function: its awaited value, not the coroutine
    predicate: Callable[[], Awaitable[T | None]],
    within: float,
    message: str,
    retry_on: tuple[type[Exception], ...] = (),
) -> T: ...
@overload
async def eventually(
    predicate: Callable[[], T | None],
    within: float,
    message: str,
    retry_on: tuple[type[Exception], ...] = (),
) -> T: ...
async def eventually(
    predicate: Predicate, within: float, message: str, retry_on: tuple[type[Exception], ...] = ()
) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming the last value seen
    (an exception of `retry_on`: not yet)."""
    try:
        return await _poll(predicate, within, 0.05, until=True, retry_on=retry_on)
    except TimeoutError as last:
        raise AssertionError(
            f"{message} (after {within:g}s; last seen: {last.args[0]!r})"
        ) from None


async def holds(predicate: Predicate, duration: float, message: str) -> None:
    """Assert `predicate` stays truthy for the whole `duration`."""
    try:
        value = await _poll(predicate, duration, 0.05, until=False)
    except TimeoutError:
        return  # truthy throughout
    raise AssertionError(f"{message} (last seen: {value!r})")


class _Raised:
    """A predicate's exception, standing for a falsy value that names it."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return repr(self.exc)
