"""``python -m reverie``: the ``reverie`` command, also what ``torchrun -m reverie train ...`` starts on each rank."""

from reverie.cli import run

run()
