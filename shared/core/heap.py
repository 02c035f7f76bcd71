"""A process's start-up heap, left out of garbage collection once it is built.

What a process builds to start (imported modules, compiled statements, caches,
Celery's consumer: ~260k objects in the API) lives as long as the process. Left
to the collector, every full collection walks all of it and holds the
interpreter meanwhile: in the API, 147 ms once in 15 s of 8 busy clients and up
to 230 ms at start-up, while no request was answered. Frozen, a collection
walks only what jobs and requests made since (two took 6 ms together in the
same run; bench/ANALYSIS.md, session 12). Before a fork it also keeps the
children's collections from writing to the pages they share with the parent.
"""

from __future__ import annotations

import gc


def freeze_start_up_heap() -> int:
    """Collect once (no start-up garbage is kept for good), then freeze every object
    that exists now; how many objects are frozen in all."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
