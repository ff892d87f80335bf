"""livemig: a testbed for virtual-machine live migration.

The import package maps the repository's top-level folders: ``livemig.core``
is ``core/`` and ``livemig.drivers`` is ``drivers/``.
"""

__version__ = "0.1.0"
