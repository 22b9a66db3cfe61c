"""``distilsent batch``: score a file of any size with bounded memory, resumable after a crash.

The input is streamed in chunks of ``chunk_rows`` rows. Each scored chunk is committed as a part
file next to the output (``OUTPUT.parts/``), written to a temporary name and renamed, and only then
counted in ``manifest.json``; so after a crash or ``kill -9`` the manifest names exactly the rows
whose results are on disk, and ``--resume`` continues from there. When every row is done the parts
are joined into OUTPUT (again through a temporary name) and the parts directory is removed: the
output holds every input row exactly once, in input order. Rows that cannot be scored go to
``OUTPUT.errors.jsonl`` with their row number and the reason.

``engine="ray"`` runs the same scoring as a Ray Data pipeline (read → ``map_batches`` with an actor
pool holding the model → write), on a local Ray or a cluster.
"""

from __future__ import annotations

from distilsent.batch.config import BatchConfig, BatchSummary
from distilsent.batch.local import run_batch

__all__ = ["BatchConfig", "BatchSummary", "run_batch"]
