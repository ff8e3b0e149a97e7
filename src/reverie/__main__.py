"""``python -m reverie``: the ``reverie`` command, also what ``torchrun -m reverie train ...`` starts on each rank."""

import sys

from reverie.cli import main

sys.exit(main())
