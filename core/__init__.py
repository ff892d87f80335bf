"""Driver-independent core: nothing here imports libvirt."""
