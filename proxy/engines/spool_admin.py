"""What the admin API asks of an engine's spool (the Cloud Tasks engine's
``cloudtasks.spool``): its size, the breaker's state and its entries, page by page."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from proxy.engines.admin import Page
from proxy.engines.local.store.spool import SpoolEntry


@runtime_checkable
class SpoolListing(Protocol):
    """An engine's spool as the admin API shows it."""

    def depth(self) -> int:
        """Entries in the spool."""
        ...

    def size(self) -> int:
        """Bytes of the spooled requests."""
        ...

    def oldest_age(self) -> float:
        """Seconds the oldest entry has waited; 0 when empty."""
        ...

    def breaker_state(self) -> str:
        """``closed``, ``half_open`` or ``open``."""
        ...

    async def list_entries(self, *, limit: int, cursor: str | None) -> Page[SpoolEntry]:
        """One page of entries in arrival order, without their requests."""
        ...
