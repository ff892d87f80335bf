"""Dynamic VM consolidation: CPU traces, power models, the policies of the literature
(Beloglazov & Buyya) and of OpenStack Watcher, and the consolidation controller.

One concept per module: :mod:`power` (watt tables), :mod:`traces` (PlanetLab CPU
traces), :mod:`reference` (the reference experiment's hosts and VM types),
:mod:`overload`, :mod:`selection`, :mod:`placement` (the policies, pure functions with
registries by name), :mod:`cloudsim` (the ``cloudsim`` migration-cost mode: an
accounting engine that reproduces CloudSim 5.0's experiment), :mod:`snapshot` (the
placement snapshot as plain data).
"""
