"""The sweep's progress bar: cells done, failed and running, and an ETA.

One line redrawn in place with ``\\r`` (as :mod:`livemig.core.progress`), at most every
``min_interval`` seconds. The ETA is the remaining cells at the pace of the cells
finished in this invocation (cells done by an earlier one do not count towards it).

>>> import io
>>> out = io.StringIO()
>>> bar = SweepProgress(10, out, done_before=2, width=10, min_interval=0.0)
>>> bar.started -= 30.0  # as if the sweep had started 30 s ago
>>> bar.finish(ok=True); bar.finish(ok=False); bar.set_running(2)
>>> out.getvalue().split("\\r")[-1].rstrip()
'[####......] 4/10 cells: 3 ok (2 earlier), 1 failed, 2 running, ETA 1.5 min'
"""

from __future__ import annotations

import time
from typing import TextIO

from livemig.core.units import format_duration


class SweepProgress:
    """``[###...] done/total cells: N ok (M earlier), F failed, R running, ETA T``."""

    def __init__(self, total: int, stream: TextIO, *, done_before: int = 0, width: int = 30,
                 min_interval: float = 0.2) -> None:
        self.total = total
        self.stream = stream
        self.width = width
        self.min_interval = min_interval
        self.before = done_before  # finished by an earlier invocation
        self.ok = 0
        self.failed = 0
        self.running = 0
        self.started = time.monotonic()
        self._last_draw = -float("inf")
        self._drawn = False
        self._width_drawn = 0  # spaces over the rest of a longer line drawn before

    @property
    def done(self) -> int:
        return self.before + self.ok + self.failed

    def eta(self) -> float | None:
        """Seconds until the last cell, at this invocation's pace (None before a cell)."""
        finished = self.ok + self.failed
        if finished == 0:
            return None
        return (time.monotonic() - self.started) / finished * (self.total - self.done)

    def finish(self, *, ok: bool) -> None:
        """Count one finished cell."""
        self.ok += ok
        self.failed += not ok
        self._maybe_draw()

    def set_running(self, running: int) -> None:
        if running != self.running:
            self.running = running
            self._maybe_draw()

    def tick(self) -> None:
        """Redraw now and then while nothing finishes (the ETA moves)."""
        self._maybe_draw()

    def _maybe_draw(self) -> None:
        now = time.monotonic()
        if now - self._last_draw >= self.min_interval or self.done == self.total:
            self._last_draw = now
            self.draw()

    def draw(self) -> None:
        filled = self.width if self.total == 0 else self.width * self.done // self.total
        text = (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
                f"cells: {self.before + self.ok} ok")
        if self.before:
            text += f" ({self.before} earlier)"
        text += f", {self.failed} failed, {self.running} running"
        eta = self.eta()
        if eta is not None and self.done < self.total:
            text += f", ETA {format_duration(eta)}"
        self.stream.write("\r" + text.ljust(self._width_drawn))
        self._width_drawn = len(text)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Draw the final state and end the line (if anything was drawn)."""
        if self._drawn:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
