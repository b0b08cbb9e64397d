"""``python -m kgserver``: the ``kgserver`` command (what ``torchrun -m kgserver`` runs on each worker)."""

from kgserver.cli import main

main()
