"""A tiny single-line progress bar for terminals (no dependency).

>>> import io
>>> out = io.StringIO()
>>> bar = ProgressBar(4, out, width=8, min_interval=0.0)
>>> bar.advance(); bar.advance(ok=False); bar.close()
>>> out.getvalue().split("\\r")[-1]
'[####....] 2/4 migrations finished (1 not completed)\\n'

With the run's horizon (the scenario's ``until``), the time the last migration
finished is shown against it:

>>> out = io.StringIO()
>>> bar = ProgressBar(2, out, width=4, min_interval=0.0, horizon=21600.0)
>>> bar.now = 90.0; bar.draw(); out.getvalue()
'\\r[....] 0/2 migrations finished, at 1.5 min of 6 h'
"""

from __future__ import annotations

import time
from typing import TextIO

from livemig.core.model import MigrationStatus
from livemig.core.state import MigrationRecord
from livemig.core.units import format_duration


class ProgressBar:
    """``[####....] done/total label``, redrawn in place with ``\\r`` at most every
    ``min_interval`` seconds (and always for the last step)."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        *,
        label: str = "migrations finished",
        width: int = 30,
        min_interval: float = 0.1,
        horizon: float | None = None,
    ) -> None:
        self.total = max(0, total)
        self.stream = stream
        self.label = label
        self.width = width
        self.min_interval = min_interval
        self.horizon = horizon  # the run's until, seconds
        self.now: float | None = None  # run time of the last finished migration
        self.done = 0
        self.problems = 0
        self._last_draw = -float("inf")
        self._drawn = False

    def advance(self, *, ok: bool = True) -> None:
        """Count one finished item."""
        self.done += 1
        self.problems += 0 if ok else 1
        self.total = max(self.total, self.done)  # a drain may find more VMs than expected
        now = time.monotonic()
        if now - self._last_draw >= self.min_interval or self.done == self.total:
            self._last_draw = now
            self.draw()

    def on_finish(self, record: MigrationRecord) -> None:
        """The runner's ``on_finish`` callback."""
        if record.finished_at is not None:
            self.now = record.finished_at
        self.advance(ok=record.status is MigrationStatus.COMPLETED)

    def draw(self) -> None:
        filled = self.width if self.total == 0 else self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        text = f"[{bar}] {self.done}/{self.total} {self.label}"
        if self.problems:
            text += f" ({self.problems} not completed)"
        if self.horizon is not None and self.now is None:
            text += f", horizon {format_duration(self.horizon)}"
        elif self.horizon is not None and self.now is not None:
            text += f", at {format_duration(self.now)} of {format_duration(self.horizon)}"
            if self.now >= self.horizon:
                text += " (horizon reached)"
        self.stream.write("\r" + text)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Draw the final state and end the line (if anything was drawn)."""
        if self._drawn:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
