"""A first-fragment cache: how a BR finds the port (and so the CE) of IPv4 fragments without reassembly.

Only the first fragment (offset 0) carries the transport header.  RFC 7597 §8.3.3 lets a BR
either reassemble or remember what the first fragment decided, keyed by the fields that name a
datagram: (source, destination, protocol, identification).  Remembering is cheaper and forwards
each fragment as soon as its fate is known; fragments that arrive *before* their first fragment
(reordering — the first may arrive last) are held until it comes or the entry times out.  Every
limit is bounded so a flood of orphan fragments costs memory we chose, not memory we lose.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

_UNRESOLVED = object()


class FragmentCache:
    """Decisions of first fragments, and fragments waiting for one.

    ``value`` is whatever the caller decided on the first fragment (a CE address, a drop
    reason, …); ``None`` is a legitimate value, distinct from "not known yet".
    """

    def __init__(self, timeout: float = 15.0, max_entries: int = 8192, max_held: int = 4096,
                 max_held_per_key: int = 64) -> None:
        self.timeout = timeout
        self.max_entries = max_entries
        self.max_held = max_held
        self.max_held_per_key = max_held_per_key
        # key -> [deadline, value or _UNRESOLVED, held items]
        self._entries: dict[Hashable, list[Any]] = {}
        self.held = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: Hashable) -> tuple[bool, Any]:
        """(known, value) for a non-first fragment."""
        e = self._entries.get(key)
        if e is None or e[1] is _UNRESOLVED:
            return False, None
        return True, e[1]

    def resolve(self, key: Hashable, value: Any, now: float) -> list[Any]:
        """Record the first fragment's decision; return the fragments that waited for it."""
        e = self._entries.get(key)
        held: list[Any] = []
        if e is None:
            if len(self._entries) >= self.max_entries:
                self._evict_oldest()
            self._entries[key] = [now + self.timeout, value, []]
        else:
            held = e[2]
            self.held -= len(held)
            e[0], e[1], e[2] = now + self.timeout, value, []
        return held

    def hold(self, key: Hashable, item: Any, now: float) -> bool:
        """Keep a fragment until its first fragment arrives; False when a limit says drop it."""
        if self.held >= self.max_held:
            return False
        e = self._entries.get(key)
        if e is None:
            if len(self._entries) >= self.max_entries:
                self._evict_oldest()
            e = self._entries[key] = [now + self.timeout, _UNRESOLVED, []]
        elif len(e[2]) >= self.max_held_per_key:
            return False
        e[2].append(item)
        self.held += 1
        return True

    def _evict_oldest(self) -> None:
        key = next(iter(self._entries))
        self.held -= len(self._entries.pop(key)[2])

    def expire(self, now: float) -> int:
        """Forget timed-out entries; return how many held fragments were dropped with them."""
        dropped = 0
        dead = [k for k, e in self._entries.items() if e[0] <= now]
        for k in dead:
            n = len(self._entries.pop(k)[2])
            dropped += n
        self.held -= dropped
        return dropped
