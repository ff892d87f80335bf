"""The current placement as plain data, for tools outside the simulator (e.g. an
optimality bound that reads where every VM is and what it asks for).

:func:`placement_snapshot` returns a dict that ``json.dumps`` accepts::

    {"time_s": float,
     "hosts": [{"id": int, "pes": int, "pe_mips": float, "capacity_mips": float,
                "ram_mb": float, "power_model_watts": [11 floats], "utilisation": float}],
     "vms":   [{"id": int, "name": str, "host": int, "mips": float, "ram_mb": float,
                "demand_mips": float, "migrating_to": [int]}]}

``demand_mips`` is the VM's current (uncapped) CPU request; ``host`` its current host
(the source while it migrates, ``migrating_to`` the destinations in flight). VMs that
CloudSim has destroyed (a request of exactly 0) are left out.

>>> import numpy as np
>>> from livemig.consolidation.cloudsim import Engine, Experiment, Policy
>>> g4 = [86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117]
>>> exp = Experiment(samples=np.array([[0.5, 0.5]]), vm_mips=np.array([1000.0]),
...     vm_ram=np.array([613.0]), vm_bw=np.array([1e5]), host_pe_mips=np.array([1860.0]),
...     host_pes=np.array([2.0]), host_ram=np.array([4096.0]), host_bw=np.array([1e6]),
...     host_tables=np.array([g4], float), vm_names=("a",))
>>> engine = Engine(exp, Policy(kind="dvfs")); engine.place_initial(); engine.update(0.1, False)
>>> snap = placement_snapshot(engine)
>>> snap["hosts"][0]["capacity_mips"], snap["vms"][0]["host"], snap["vms"][0]["demand_mips"]
(3720.0, 0, 500.0)
"""

from __future__ import annotations

from typing import Any

from livemig.consolidation.cloudsim import Engine


def placement_snapshot(engine: Engine) -> dict[str, Any]:
    """The engine's placement now (see the module doc)."""
    exp = engine.exp
    util = engine.util_mips / engine.total
    hosts = [{
        "id": h, "pes": int(exp.host_pes[h]), "pe_mips": float(exp.host_pe_mips[h]),
        "capacity_mips": float(engine.total[h]), "ram_mb": float(exp.host_ram[h]),
        "power_model_watts": [float(w) for w in exp.host_tables[h]],
        "utilisation": float(util[h]),
    } for h in range(engine.n_hosts)]
    names = exp.vm_names or tuple(str(v) for v in range(engine.n_vms))
    vms = [{
        "id": v, "name": names[v], "host": int(engine.host_of[v]),
        "mips": float(exp.vm_mips[v]), "ram_mb": float(exp.vm_ram[v]),
        "demand_mips": float(engine.req[v]),
        "migrating_to": list(engine.in_flight.get(v, [])),
    } for v in range(engine.n_vms) if engine.alive[v]]
    return {"time_s": float(engine.last_time), "hosts": hosts, "vms": vms}
