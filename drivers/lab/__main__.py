"""``python -m livemig.drivers.lab up|status|down|image``."""

import sys

from livemig.drivers.lab.commands import main

sys.exit(main())
