"""`tabpfn-api worker` on Celery's gevent pool: one of the candidates section 5b measures.

Set up the way gevent asks to be, which `tabpfn-api worker` does not do (the
product runs the threads pool, docs/scheduling.md): the standard library is
monkey-patched before anything imports socket, ssl or threading, and psycopg2,
a C driver gevent cannot patch, is made to yield to the hub while it waits on
PostgreSQL (psycogreen). Without that second part every query would stop all
of the process's jobs until PostgreSQL answered.

    python -m bench.gevent_worker [celery options]    # e.g. --concurrency 32
"""

from gevent import monkey

monkey.patch_all()

from psycogreen.gevent import patch_psycopg  # noqa: E402  (after the patch, as gevent requires)

patch_psycopg()

import sys  # noqa: E402

from cli.main import main  # noqa: E402

if __name__ == "__main__":
    main(["worker", "--pool", "gevent", *sys.argv[1:]])
