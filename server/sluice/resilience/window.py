"""How many things happened in the last few seconds, in constant memory."""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]

_NEVER = -(2**63)


class SlidingCount:
    """The number of `add`s in the last `window` seconds.

    The window moves in `slices` steps of `window / slices` seconds, so an
    event leaves the count between `(slices - 1) / slices x window` and
    `window` seconds after it happened: exact enough for ratios and budgets,
    and the memory stays the same whatever the traffic."""

    __slots__ = ("_clock", "_counts", "_epochs", "_width")

    def __init__(self, window: float, clock: Clock, slices: int = 10) -> None:
        self._width = window / slices
        self._clock = clock
        self._counts = [0] * slices
        # The step each slot counts for; a slot from an older step is stale.
        self._epochs = [_NEVER] * slices

    def add(self) -> None:
        epoch = int(self._clock() // self._width)
        slot = epoch % len(self._counts)
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._counts[slot] = 0
        self._counts[slot] += 1

    def total(self) -> int:
        oldest = int(self._clock() // self._width) - len(self._counts)
        return sum(
            count for count, epoch in zip(self._counts, self._epochs, strict=True) if epoch > oldest
        )

    def clear(self) -> None:
        self._epochs = [_NEVER] * len(self._counts)
