"""Pre-copy model profiles: the parameters of the simulator's migration model.

A *profile* is a small YAML file (``policy.migration.profile: FILE`` in a scenario,
relative to the scenario file) holding what a calibration measured on real hosts::

    name: qemu10-lab            text (= the file name without extension)
    startup_cost: 285ms         before the first memory byte (begin, prepare, dest QEMU)
    startup_cost_per_gib: 90ms  more start-up per GiB of the guest's RAM (= 0; a destination
                                that preallocates the guest's RAM, e.g. on huge pages)
    switchover_cost: 20ms       fixed part of every downtime (device state, resume)
    link_speed: 330MiB/s        an uncapped migration's effective speed (= the host link)
    flush_speed: 1GiB/s         the stop-and-copy's speed for pages sent before (and all of a
                                capped migration's; = link_speed; precopy.flush_speeds_for)
    bandwidth_window: 100ms     how long a transfer must have run before QEMU has a
                                bandwidth measurement (and so a switchover threshold)
    check_period: 50ms          seconds between QEMU's checks in an uncapped migration, > 0
                                (capped: one per 100 ms rate-limit window;
                                precopy.check_period_for)
    description: text           free text (ignored); keys x-* are ignored too
    measured: {...}             how ``livemig calibrate`` measured it (provenance; ignored)

Every key is optional. A scenario's explicit ``policy.migration.<key>`` wins over the
profile, the profile over the model's built-in default (:data:`QEMU_DEFAULTS`, the
figures measured on this lab's QEMU 10.0.2 / libvirt 11.3.0, see
``../shared/docs/qemu-migration-facts.md``; the textbook model's are all 0).

>>> from livemig.core.model import MigrationModel, MigrationPolicy
>>> p = model_params(MigrationPolicy())
>>> p.model.value, p.startup_cost, p.switchover_cost, p.link_speed, p.bandwidth_window
('qemu', 0.285, 0.02, None, 0.1)
>>> p.check_period
0.05
>>> p = model_params(MigrationPolicy(model=MigrationModel.TEXTBOOK, switchover_cost=0.05))
>>> p.startup_cost, p.switchover_cost
(0.0, 0.05)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .model import MigrationModel, MigrationPolicy
from .yaml_nodes import (
    Field,
    Reader,
    ScenarioError,
    compose,
    decode_yaml_text,
    duration,
    rate,
    string,
)

PARAMETERS = ("startup_cost", "startup_cost_per_gib", "switchover_cost", "link_speed",
              "flush_speed", "bandwidth_window", "check_period")
"""The model parameters a profile (or a scenario's ``policy.migration``) may set."""

READERS: dict[str, Reader] = {
    "startup_cost": duration(non_negative=True),
    "startup_cost_per_gib": duration(non_negative=True),
    "switchover_cost": duration(non_negative=True),
    "link_speed": rate(positive=True),
    "flush_speed": rate(positive=True),
    "bandwidth_window": duration(non_negative=True),
    "check_period": duration(positive=True),  # QEMU checks between iterations
}

QEMU_DEFAULTS: dict[str, float | None] = {
    "startup_cost": 0.285,  # median of 0.25-0.35 s before the first byte
    "startup_cost_per_gib": 0.0,  # the lab on ordinary memory: no growth with the RAM
    # capped downtime was 23-35 ms whatever the limit; the flush of cap x limit (1-5 MiB)
    # at ~330 MiB/s takes 3-15 ms of it: about 20 ms are fixed
    "switchover_cost": 0.020,
    "link_speed": None,  # the host link (a profile gives the measured speed)
    "flush_speed": None,  # link_speed (the flush of pages sent before; calibrate fits it)
    "bandwidth_window": 0.1,  # QEMU's BUFFER_DELAY: bandwidth measured every 100 ms
    "check_period": 0.05,  # QEMU's MAX_WAIT: an uncapped RAM iteration runs up to 50 ms
}
TEXTBOOK_DEFAULTS: dict[str, float | None] = {
    "startup_cost": 0.0, "startup_cost_per_gib": 0.0, "switchover_cost": 0.0,
    "link_speed": None, "flush_speed": None, "bandwidth_window": 0.0, "check_period": 0.0,
}


def startup_seconds(startup_cost: float, per_gib: float, ram: float | None) -> float:
    """Seconds before a migration's first byte: ``startup_cost`` plus ``per_gib`` for each
    GiB of the guest's ``ram`` bytes (None: not known, counted as none).

    >>> startup_seconds(0.2, 0.1, 512 * 2**20), startup_seconds(0.2, 0.1, None)
    (0.25, 0.2)
    """
    return startup_cost + per_gib * (ram or 0.0) / 2**30


@dataclass(frozen=True, kw_only=True)
class ModelParams:
    """The resolved parameters of one run's pre-copy model (units: s, B/s)."""

    model: MigrationModel
    startup_cost: float
    startup_cost_per_gib: float  # more start-up per GiB of the guest's RAM
    switchover_cost: float
    link_speed: float | None  # None: the host link decides
    flush_speed: float | None  # None: link_speed
    bandwidth_window: float
    check_period: float  # seconds between switchover checks of an uncapped pass

    def startup_for(self, ram: float) -> float:
        """Seconds before the first byte for a guest of ``ram`` bytes
        (:func:`startup_seconds`)."""
        return startup_seconds(self.startup_cost, self.startup_cost_per_gib, ram)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["model"] = self.model.value
        return values


@dataclass(frozen=True, kw_only=True)
class Profile:
    name: str
    path: str
    values: dict[str, float]  # the parameters the file sets


def model_params(policy: MigrationPolicy) -> ModelParams:
    """The parameters in force: the policy's (scenario or profile), else the model's."""
    defaults = QEMU_DEFAULTS if policy.model is MigrationModel.QEMU else TEXTBOOK_DEFAULTS
    values = {key: getattr(policy, key) for key in PARAMETERS}
    for key, value in values.items():
        if value is None:
            values[key] = defaults[key]
    return ModelParams(model=policy.model, **values)


def load_profile(path: str | Path) -> Profile:
    """Read a profile file; :class:`ScenarioError` (``FILE:LINE: field: problem``) if it
    is not one, ``OSError`` if it cannot be read."""
    path = Path(path)
    data = path.read_bytes()
    source = str(path)
    text = decode_yaml_text(data, source)
    node = compose(text, source)
    if node is None:
        raise ScenarioError(source, 1, "", "no content; expected a mapping of model "
                            f"parameters ({', '.join(PARAMETERS)})")
    top = Field(node, "", source).mapping(
        ("name", "description", "measured", *PARAMETERS, "x-*"),
        f"a mapping with keys name, {', '.join(PARAMETERS)}",
    )
    top.value("description", string("free text"), None)
    name = top.value("name", string("a profile name"), path.stem)
    values = {key: value for key, value in top.read(READERS).items() if value is not None}
    return Profile(name=name, path=source, values=values)
