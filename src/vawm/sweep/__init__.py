"""Sweeps: a grid of ``vawm train`` runs from a YAML file, on Ray or one after another.

``vawm sweep FILE.yaml --root DIR``; see ``docs/sweeps.md``.
"""

from vawm.sweep.cli import main
from vawm.sweep.spec import Cell, Sweep, SweepError, load_sweep, parse_sweep

__all__ = ["Cell", "Sweep", "SweepError", "load_sweep", "main", "parse_sweep"]
