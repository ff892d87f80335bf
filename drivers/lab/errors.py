"""The one exception of the lab: something could not be set up, checked or torn down."""

from __future__ import annotations


class LabError(RuntimeError):
    """A lab operation failed; the message says what and, where known, why."""
