"""A worker node's start and stop: warm before the first job, drain on SIGTERM.

- Ready means warm: tabpfn-client (and scipy, pandas, pyarrow through it) is
  imported, the upstream's limits are read, and the database and Redis are
  connected before the node takes its first job. With the threads pool this
  runs once per node; under prefork it runs in the parent, before the fork, so
  the children share its pages. The threads pool's threads are started too.
- On start, jobs whose process on this host died (the node was killed and
  restarted) are queued again at once, without waiting for the sweeper.
- On SIGTERM, or however else Celery is told to stop (Flower's "Shut Down":
  DrainOnEveryStop), slots finish the job in hand and claim no more; whatever still
  runs after WORKER_DRAIN_S is handed back to the queue (not an attempt) and
  the process exits, so another node picks it up at once. Under prefork the
  jobs run in the pool's processes, not in the one Celery signals: it passes
  the drain on, each pool process drains its own job the same way, and the node
  exits once they have (the kernel kills them when it goes: pdeathsig).
- Ctrl-C and SIGHUP are SIGTERM's drain; SIGQUIT (Celery's cold shutdown), or
  Ctrl-C again, hands the jobs in flight back at once and exits. A threads
  process takes these signals, SIGTERM included, on a thread of its own
  (listen_for_stop_signals), never in Celery's handlers: its cold shutdown kills
  the processes that run tasks, which the threads pool cannot do (the process
  hung until its jobs' deadlines failed them); its SIGHUP restarts the process
  by exec'ing its command line, which in a node's process is the whole node's;
  and two SIGTERMs at once could deadlock the process in its warm shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from celery import bootsteps
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutting_down

from shared.core.config import get_settings
from shared.core.heap import freeze_start_up_heap

log = logging.getLogger(__name__)

# A prefork pool process drains as a threads node does (_listen_for_drain). The node
# asks it with DRAIN_POOL_PROCESS, which Celery and billiard use for nothing there.
DRAIN_POOL_PROCESS = signal.SIGUSR2
_DRAIN_SIGNALS = {DRAIN_POOL_PROCESS, signal.SIGTERM}
# Taken by a threads-pool process itself rather than by Celery (listen_for_stop_signals).
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP}
# Held by the one thread that hands this process's jobs back and exits.
_handing_back = threading.Lock()
# How long a node waits, past the grace, for its pool processes to hand their jobs back.
_POOL_HAND_BACK_S = 10.0
# The node's Celery pool, kept once the node is ready: under prefork its processes
# are what a drain reaches, and a pool process forked after that is a replacement.
_node_pool: object = None


def import_what_jobs_need() -> None:
    """Import what jobs run and build its first-call caches; opens no connection.

    A node of several processes runs this in its parent before the fork
    (worker/node.py), so the processes share these pages.
    """
    import pandas
    import pyarrow.parquet  # noqa: F401

    from shared.upstream.client import load_client

    client = load_client()
    from tabpfn_client.estimator import _clean_text_features

    from shared.tables.payloads import decode_table, encode_table

    client.models.ClientOptions  # noqa: B018  (resolves the lazily built model classes)
    # One round trip through the codec and the client's text cleaning: their first
    # calls build caches (pyarrow's, pandas') that a job should not pay for.
    table = decode_table(encode_table(pandas.DataFrame({"x": [1.0], "c": ["a"]})).read())
    _clean_text_features(table)

    from worker.webhooks import tls_context

    tls_context()  # loads the CA bundle webhook deliveries verify against


def warm_up() -> float:
    """Import and connect what jobs need; the seconds it took."""
    from shared.accounts.security import warm_secret_box
    from shared.core.redis_client import open_connections
    from shared.jobs.warm_up import warm_up_job_queries
    from shared.upstream.account import upstream_limits

    settings = get_settings()
    started = time.perf_counter()
    import_what_jobs_need()
    warm_secret_box()  # `tabpfn-api worker` requires SECRET_KEY before it gets here
    _wait_for_the_schema()
    try:
        # Opens the pool's connections and runs each job statement once on each.
        warm_up_job_queries(settings.db_pool_size)
        open_connections(settings.worker_concurrency)  # capped by REDIS_MAX_CONNECTIONS
    except Exception as exc:  # a dependency still starting (or not migrated yet)
        log.warning(
            "warm-up: database or Redis part skipped (%s); jobs will connect themselves",
            type(exc).__name__,
        )
    upstream_limits()
    return time.perf_counter() - started


SCHEMA_POLL_S = 2.0


def _wait_for_the_schema() -> None:
    """Take no job before the database has this release's schema.

    A worker of a new release started before `migrate` (a rollout that runs both at
    once; compose orders them) read columns the database did not have yet: each job
    it took failed for good on an "unexpected error". An unknown, newer revision is
    a later release's, migrated first in a rolling upgrade: served on. A database
    that does not answer is left to the jobs, as the warm-up below leaves it.
    """
    from shared.core.schema_version import schema_problem
    from worker.runner import draining

    told = False
    while not draining.is_set():  # a stop signal while it waits ends the wait
        try:
            problem = schema_problem()
        except Exception:  # noqa: BLE001 - not up yet: the jobs connect themselves
            return
        if problem is None:
            return
        if not told:
            log.warning("worker: %s; waiting for it before taking jobs", problem)
            told = True
        draining.wait(SCHEMA_POLL_S)


@worker_init.connect
def _warm_before_the_pool(**_: object) -> None:
    log.info("worker warmed up in %.2fs", warm_up(), extra={"event": "warm"})


@worker_process_init.connect
def _fresh_pool_process(**_: object) -> None:
    # A forked child must not reuse its parent's database or upstream connections.
    from shared.core.db import get_engine
    from shared.upstream.client import renew_after_fork
    from worker.runner import DECODE_THREADS, decoder_pool

    get_engine().dispose(close=False)
    renew_after_fork()
    _listen_for_drain()  # first: the threads started after it inherit its signal mask
    start_threads(decoder_pool(), DECODE_THREADS)
    if _node_pool is not None:
        # Forked after the node was ready: billiard replaces a pool process that
        # died (OOM killer, kill -9), mid-job perhaps. Its job runs again now, not
        # after the sweeper's lease timeout, as a threads node's replaced process does.
        _requeue_dead_runs()


def _listen_for_drain() -> None:
    """In a prefork pool process: drain when the node says so, or at a SIGTERM of its own.

    A Python signal handler runs in the main thread, which here runs the job and
    may sit in an upstream call for minutes: a drain signal received by another
    thread would wait for that call. So the signals are blocked in every thread
    of the process (threads inherit the mask of the one that starts them; this
    runs before any other is started) and one thread waits for them. SIGTERM is
    taken too: billiard's handler, set after this, would end the job at once,
    nothing handed back; a SIGTERM sent to every process of the node at once
    (systemd's default) drains instead.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _DRAIN_SIGNALS)
    threading.Thread(target=_drain_when_told, name="drain", daemon=True).start()


def listen_for_stop_signals(*, supervised: bool) -> None:
    """In a threads-pool process, before it starts any thread: SIGTERM, Ctrl-C, SIGQUIT, SIGHUP.

    - SIGTERM starts Celery's warm shutdown, and our drain with it, once however
      many come. In Celery's handler two at once could deadlock the process: it
      sends `worker_shutting_down`, whose dispatch takes a lock that is not
      reentrant, and a second SIGTERM's handler, run inside the first one's (a
      Python signal handler runs between any two bytecodes of the main thread),
      waited on that lock forever. A node's process gets every SIGTERM sent to
      the node's processes (systemd's default) twice: its own and the
      supervisor's. The job then hung until its deadline failed it.
    - SIGINT (Ctrl-C) drains, as SIGTERM does.
    - SIGHUP (a closed terminal) drains too, unless the process was started with
      it ignored (`nohup`), where it stays ignored. Celery's own would restart the
      process by exec'ing its command line: in a node's process, the command that
      started the whole node, which then ran inside it.
    - SIGQUIT hands the jobs in flight back at once and exits: a cold shutdown.
      Celery's would kill the processes that run the tasks; under the threads pool
      that is this one, and its pool cannot kill a thread (it raised
      NotImplementedError, and the process then hung until its jobs' deadlines
      failed them).
    - A second SIGINT is SIGQUIT, as in Celery ("Ctrl-C again terminates the
      tasks"), unless the process is one of a node's (`supervised`). A terminal's
      Ctrl-C reaches every process of its foreground group, and the node's
      supervisor passes it on too: each process gets one press twice. There the
      supervisor counts the presses and passes the second on as SIGQUIT.

    The signals are blocked in every thread (threads inherit the mask of the one
    that starts them) and one thread waits for them, one at a time, so Celery's
    handlers for them never run.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    # Read before Celery sets its own handler. Blocked, an ignored signal still
    # comes to sigwait (Linux queues it), so it is dropped there.
    hang_up_ignored = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    threading.Thread(
        target=_stop_when_told,
        args=(supervised, hang_up_ignored),
        name="stop-signals",
        daemon=True,
    ).start()


def _stop_when_told(supervised: bool, hang_up_ignored: bool) -> None:
    from worker.runner import draining

    presses = 0
    while True:
        sig = signal.sigwait(STOP_SIGNALS)
        if sig == signal.SIGHUP and hang_up_ignored:
            continue
        presses += sig == signal.SIGINT
        if sig == signal.SIGQUIT or (presses > 1 and not supervised):
            break
        if not draining.is_set():  # else a drain is under way: this signal adds nothing
            if sig != signal.SIGTERM:
                log.info("%s: draining as on SIGTERM; Ctrl-C again hands jobs back", sig.name)
            try:
                _warm_shutdown(sig)
            except Exception:  # this thread must live on: no other takes these signals
                log.exception("%s: the warm shutdown failed to start", sig.name)
    log.warning("cold shutdown (%s): the jobs in flight go back to the queue now", sig.name)
    draining.set()
    _hand_back_and_exit()


def _warm_shutdown(sig: signal.Signals) -> None:
    """What Celery's SIGTERM handler does, from this thread: `worker_shutting_down`
    (our _drain), then the flag its consumer loop checks between polls (a second or
    two; the handler's own wait is the same, as the poll resumes after a signal)."""
    from celery.worker import state

    try:
        worker_shutting_down.send(sender=None, sig=sig.name, how="Warm", exitcode=0)
    finally:
        state.should_stop = 0  # Celery's EX_OK: the worker exits 0


def start_threads(executor: ThreadPoolExecutor, count: int, timeout_s: float = 30.0) -> int:
    """Start `count` threads of `executor` now; how many it has.

    concurrent.futures starts a thread at a submit that finds none idle, and
    waits until that thread runs. In a fresh node's first burst those submits
    come from Celery's consumer thread, one message after another, each waiting
    for its new thread to get the interpreter's lock while the burst's jobs hold
    it: the first jobs then wait longer for their slot than any later ones.
    Each task started here waits for all the others, so each needs a thread.
    """
    barrier = threading.Barrier(count + 1)
    for _ in range(count):
        executor.submit(barrier.wait, timeout_s)
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout_s)
    return len(executor._threads)


def _is_prefork(pool: object) -> bool:
    from celery.concurrency.prefork import TaskPool as PreforkPool

    return isinstance(pool, PreforkPool)


def _start_slot_threads(pool: object) -> None:
    """The threads pool's slots and the test-set decoders, started before the first job."""
    from worker.runner import DECODE_THREADS, decoder_pool

    if _is_prefork(pool):
        return  # its processes run the jobs, and start their own (_fresh_pool_process)
    executor = getattr(pool, "executor", None)
    if isinstance(executor, ThreadPoolExecutor):  # the threads pool (not solo)
        start_threads(executor, pool.limit)
    start_threads(decoder_pool(), DECODE_THREADS)


def _share_slots_with_webhooks(pool: object) -> None:
    """Bound this process's webhook deliveries to WEBHOOK_SLOT_SHARE of its slots.

    Under prefork each pool process runs one task at a time: nothing to share."""
    from worker.webhooks import share_slots

    if not _is_prefork(pool) and getattr(pool, "limit", None):
        share_slots(pool.limit)


@worker_ready.connect
def _recover_and_wake(sender: object = None, **_: object) -> None:
    from shared.queue import wake_at
    from worker.node import report_ready

    global _node_pool
    controller = getattr(sender, "controller", None)
    _node_pool = getattr(controller, "pool", None)
    _start_slot_threads(_node_pool)
    _share_slots_with_webhooks(_node_pool)
    _requeue_dead_runs()
    # Queued work may be waiting for free slots (this node's): look now.
    from datetime import UTC, datetime

    wake_at(datetime.now(UTC))
    # What the process built to start is left out of garbage collection from now on
    # (the node's parent froze the imports before the fork: those are not walked
    # again, so no page shared with the parent is written).
    log.info("ready; %d objects left out of garbage collection", freeze_start_up_heap())
    report_ready(getattr(controller, "concurrency", 0))


def _requeue_dead_runs() -> None:
    from worker.runner import release_dead_runs

    try:
        released = release_dead_runs()
    except Exception as exc:
        log.warning("start-up recovery skipped (%s); the sweeper will do it", type(exc).__name__)
        return
    if released:
        log.info("re-queued %d job(s) of dead processes on this host", released)


def _pool_processes() -> list[int]:
    """The prefork pool's processes; none where this process runs the jobs itself."""
    if not _is_prefork(_node_pool):
        return []
    try:
        return [pid for pid in _node_pool.info["processes"] if pid]
    except AttributeError:  # a pool Celery has already let go of (its _pool is None)
        return []


@worker_shutting_down.connect
def _drain(sig: str | None = None, how: str | None = None, **_: object) -> None:
    from worker.heartbeat import process_is_gone
    from worker.runner import draining

    if draining.is_set():
        # A drain is under way: every warm stop ends here (DrainOnEveryStop) after the
        # signal that began it, and under prefork Celery's handlers send this for
        # every stop signal (Ctrl-C again, its cold shutdown, sends it a second time).
        return
    draining.set()
    grace = get_settings().worker_drain_s
    pool = _pool_processes()
    for pid in pool:  # each drains its own job (_drain_when_told)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, DRAIN_POOL_PROCESS)
    log.info("shutting down (%s): in-flight jobs have %.0fs to finish", sig, grace)

    def hand_back_the_rest() -> None:
        time.sleep(grace)
        # Past the grace each pool process hands its job back and exits; this one's
        # exit would kill them at once, so it waits for them first (bounded).
        until = time.monotonic() + _POOL_HAND_BACK_S
        while not all(map(process_is_gone, pool)) and time.monotonic() < until:
            time.sleep(0.05)
        _hand_back_and_exit()

    threading.Thread(target=hand_back_the_rest, name="drain", daemon=True).start()


class DrainOnEveryStop(bootsteps.StartStopStep):
    """A worker step: however Celery is told to stop, the node drains as on SIGTERM.

    Celery's remote `shutdown` (Flower's "Shut Down", `celery control shutdown`)
    sends no `worker_shutting_down`: it stops the pool, which waits for the jobs in
    flight, while their slots went on claiming queued jobs from PostgreSQL as each
    ended. The process ran the backlog before it stopped, and a hung job held it
    until its deadline. Its `close` runs as the stop begins, before any step stops;
    after a stop signal the drain is under way already and it does nothing.
    """

    requires = ("celery.worker.components:Pool",)

    def close(self, parent: object) -> None:
        _drain(sig="a remote shutdown, or Celery's own stop")


def _drain_when_told() -> None:
    """A prefork pool process's drain (_listen_for_drain): once told, its job finishes,
    or at the grace is handed back. Its job ending first, the process ends as Celery
    closes the pool, before the grace."""
    from worker.runner import draining

    signal.sigwait(_DRAIN_SIGNALS)
    draining.set()
    time.sleep(get_settings().worker_drain_s)
    _hand_back_and_exit()


def _hand_back_and_exit() -> None:
    """Give back what this process still runs and exit (its job threads may be stuck upstream).

    Once: a second caller (a cold shutdown at the drain's end) waits here until the
    first has exited the process. Two at once would split the jobs, and the first
    to finish would exit under the other, between its commit and its wake-up.
    """
    from worker.runner import hand_back_in_flight

    _handing_back.acquire()
    try:
        handed = hand_back_in_flight()
        log.warning("drain: handed %d unfinished job(s) back to the queue; exiting", handed)
    except Exception as exc:  # noqa: BLE001 - the exit below must happen whatever this did
        # PostgreSQL restarting or failing over with the deploy: the process exited
        # never, holding the lock (a later stop signal then hung), and kept its jobs
        # with no one beating their leases. Exiting, the jobs come back when their
        # leases run out (the sweeper), as after a SIGKILL.
        log.error(
            "drain: the hand-back failed (%s); exiting, the jobs return when their leases run out",
            type(exc).__name__,
        )
    logging.shutdown()
    os._exit(0)
