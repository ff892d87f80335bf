"""A fake libvirt for the real driver's logic, in the spirit of Nova's libvirt fixture.

* :mod:`fakelibvirt.libvirt` is the ``libvirt`` module the driver imports: the constants,
  ``libvirtError`` and the calls of ``drivers/libvirt_*.py``, nothing more.
* :mod:`fakelibvirt.world` is the hypervisor world behind it: hosts with domains,
  ``instances`` pools (shared or not), CPUs, libvirtd and link faults, and migrations that
  run through setup, pre-copy passes, switchover or post-copy on a short real timescale.
* :mod:`fakelibvirt.driver` imports the driver bound to the fake (the real libvirt-python
  need not be installed) and builds it on a world, with an inventory in a temporary
  directory.

The fake is for the driver's logic; the lab (``tests/lab``, ``-m lab``) stays the proof that
it works on real libvirt and QEMU.
"""
