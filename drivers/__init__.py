"""Drivers: the simulated data centre and real libvirt hosts."""
