"""The term: whether this replica leads now, and the fence its writes go with.

One object, asked and never copied (etcd's concurrency.Election: IsOwner, Rev). Every
component that writes asks it at the moment it writes: `fence()` raises `Fenced` when this
replica does not lead, so a destructive call (a delete, a lease revoke, a record deleted, a
claim released) is made under the term it was decided in, or not at all. A term begins once
this replica won the election and re-read what etcd holds; it ends once (`end`), whoever
learns of the loss first (the election, or a write etcd refused as fenced). `ended()` and
`began()` are how a component waits for either (etcd's Session.Done()).
"""

from __future__ import annotations

import asyncio

from etcd_registrar.etcd import Fence, Fenced


class Term:
    def __init__(self) -> None:
        self._fence: Fence | None = None
        self._leading = False
        self.reason = "not elected yet"  # why the last term ended
        self._began = asyncio.Event()
        self._ended = asyncio.Event()
        self._ended.set()

    @classmethod
    def alone(cls) -> Term:
        """A term that leads alone, unfenced: one replica with no election (tools, tests)."""
        term = cls()
        term.begin(None)
        return term

    @property
    def leading(self) -> bool:
        return self._leading

    def fence(self) -> Fence | None:
        """The fence a write goes with now (None: leading alone); Fenced when not leading."""
        if not self._leading:
            raise Fenced(f"this replica does not lead ({self.reason})")
        return self._fence

    def begin(self, fence: Fence | None) -> None:
        """Lead from now on, fenced by `fence` (None: alone, a dry run)."""
        self._fence, self._leading = fence, True
        self._ended.clear()
        self._began.set()

    def end(self, reason: str) -> bool:
        """Lead no more; False if this replica did not lead."""
        if not self._leading:
            return False
        self._fence, self._leading, self.reason = None, False, reason
        self._began.clear()
        self._ended.set()
        return True

    def forfeit(self, fence: Fence | None, reason: str) -> None:
        """A term won but not taken up (reading etcd after the election failed): it begins
        and ends at once, so that whoever waits on the term (the election) learns of it."""
        self.begin(fence)
        self.end(reason)

    async def began(self) -> None:
        """Return once this replica leads."""
        await self._began.wait()

    async def ended(self) -> None:
        """Return once this replica does not lead."""
        await self._ended.wait()
