"""Internal run machinery: what turns a resolved configuration into a run directory.

Nothing here is public API and names may change between releases. The public API is
``xaibench.run``, ``xaibench.load``, ``xaibench.explain``, ``xaibench.score`` and the
:class:`xaibench.Run` they return (``docs/python-api.md``; the names are listed in
``xaibench.__all__``). The package is named ``engine``, not ``run``, so that it never shadows the
public function :func:`xaibench.run`.

Modules, one responsibility each:

- :mod:`~xaibench.engine.benchmark`: :func:`run_benchmark`, one call from a configuration to a
  written run directory (the CLI and :func:`xaibench.run` are thin layers over it).
- :mod:`~xaibench.engine.grid`: the grid's cells, every component resolved before work starts.
- :mod:`~xaibench.engine.runner`: data once, then each cell through every stage
  (:class:`CellRunner`).
- :mod:`~xaibench.engine.cell_job`: :class:`RunCellJob`, the job an executor runs for one cell
  (pickled for remote workers).
- :mod:`~xaibench.engine.checkpoints`: per-cell checkpoints that make a killed run resumable.
- :mod:`~xaibench.engine.fit_cache`: the trained model of a cell, cached on disk.
- :mod:`~xaibench.engine.results`: the results directory and its versioned schema.
- :mod:`~xaibench.engine.validation`: check a configuration without running it
  (``xaibench validate``).

This file imports nothing, so ``import xaibench.engine`` stays cheap (no torch); each module is
imported where it is used.
"""
