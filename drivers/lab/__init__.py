"""The namespace lab: several libvirtd hosts on one Linux machine."""
