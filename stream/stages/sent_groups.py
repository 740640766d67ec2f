"""Which of a scope's calendar period groups stage 1 sends: those that moved since its last
partial for the scope.

An engine replaces a group's vector with a new tuple only when its sums move
(stream/core/periods.py `PeriodRollup.flush`), so a group whose vector is the very object sent
last time holds what the scope stage already has: the scope stage keeps a source's groups that
a newer partial leaves out (stream/stages/scope_periods.py `carried_over`). Between two flushes
an event moves the ~4 groups holding its time, not the ~13 a scope publishes. Pure.
"""

from __future__ import annotations

from typing import Hashable, Sequence

from stream.core.period_views import GroupKey


class SentGroups:
    """Per scope of one engine, the group vectors its last partial carried."""

    __slots__ = ("_sent",)

    def __init__(self) -> None:
        self._sent: dict[Hashable, dict[GroupKey, tuple]] = {}

    def moved(self, scope: Hashable, groups: Sequence[tuple[GroupKey, tuple]]) -> list[tuple[GroupKey, tuple]]:
        """Of the scope's published `groups`, those not sent as they are now; they count as sent.
        Only the published groups are remembered: a group that left the published set is
        forgotten here (and expires at the scope stage)."""
        sent = self._sent.get(scope)
        self._sent[scope] = dict(groups)
        if sent is None:
            return list(groups)
        return [(key, vector) for key, vector in groups if sent.get(key) is not vector]

    def forget(self) -> None:
        """Nothing counts as sent: the next partial of every scope carries all its groups (a
        partials message that may not have been written, a rebuilt engine)."""
        self._sent.clear()

    def __len__(self) -> int:
        return len(self._sent)
