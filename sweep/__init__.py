"""Sweeps: a grid of runs (base scenarios x axes x seeds) on dask.distributed.

``livemig sweep SWEEP.yaml --out DIR`` (:mod:`.commands`): the sweep file
(:mod:`.spec`), the cells it resolves to (:mod:`.cells`; field paths: :mod:`.paths`),
their execution (:mod:`.execute`) and the table of results, ``DIR/cells.parquet``,
whose columns are documented in :mod:`.table`.
"""
