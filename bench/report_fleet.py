"""docs/benchmarks.md, sections of issues 13/14: in flight, cold start, scale-out, claim, fairness.

Each section states its target and whether this run met it, and puts the
emulator's CPU per job beside every service/direct ratio (the stand-in
upstream shares the machine; its compute is not ours to count).
"""

from __future__ import annotations

import statistics

from bench.direct import STALLED_S

INFLIGHT_TARGET = 0.8  # service ≥ 0.8 × direct threads at 1 s per call
RSS_TARGET_MB = 1024  # a node's process tree at 64 in flight
COLD_TARGET = 1.10  # first jobs' mean ≤ 1.10 × later jobs' mean (noise allowance)
SCALE_TARGET = 1.8  # two nodes ≈ 2 × one
CLAIM_TARGET_S = 0.010  # "a few ms": p99 under 10 ms
FAIR_TARGET = 3.0  # B's latency ≤ 3 × idle while A floods (tests/e2e/test_fair_share.py)
BURST_TARGET = 1.5  # drain ≤ 1.5 × the minimum the limits allow


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _cpu(emulator: dict) -> str:
    return f"{emulator['cpu_ms_per_job']:.1f}"


def render_fleet(add, results: dict) -> None:
    for name, render in (
        ("inflight", _inflight),
        ("pools", _pools),
        ("coldstart", _coldstart),
        ("scaleout", _scaleout),
        ("claim", _claim),
        ("fairness", _fairness),
    ):
        if name in results:
            render(add, results[name])


def _rounds(r: dict) -> int:
    return next(iter(r["sizes"].values())).get("rounds", 1)


def _rate(side: dict) -> str:
    rounds = side.get("jobs_per_s_rounds", [])
    each = f" ({', '.join(f'{x:.2f}' for x in rounds)})" if len(rounds) > 1 else ""
    return f"{side['jobs_per_s']:.2f}{each}"


def _inflight_cpu(add, r: dict) -> None:
    """Where each side's CPU went, per job, at every size (from /proc, both rounds)."""
    sizes = {n: s for n, s in r["sizes"].items() if "cpu_ms_per_job" in s["service"]}
    if not sizes:
        return
    add(
        "CPU per job by process in these runs, service / direct (ms; PostgreSQL and Redis "
        "are the whole servers), and the cores all of it kept busy on average:"
    )
    add("")
    add("| process | " + " | ".join(f"{n} clients" for n in sizes) + " |")
    add("|---|" + "---|" * len(sizes))
    parts = next(iter(sizes.values()))["service"]["cpu_ms_per_job"]
    for part in parts:
        cells = [
            f"{side['service']['cpu_ms_per_job'][part]:.0f} / "
            f"{side['direct']['cpu_ms_per_job'][part]:.0f}"
            for side in sizes.values()
        ]
        add(f"| {part} | " + " | ".join(cells) + " |")
    totals = [
        f"**{sum(s['service']['cpu_ms_per_job'].values()):.0f} / "
        f"{sum(s['direct']['cpu_ms_per_job'].values()):.0f}**"
        for s in sizes.values()
    ]
    add("| **all** | " + " | ".join(totals) + " |")
    cores = [
        f"{side['service']['cores_busy']:.2f} / {side['direct']['cores_busy']:.2f}"
        for side in sizes.values()
    ]
    add("| cores busy on average (of 2) | " + " | ".join(cores) + " |")
    add("")


def _inflight(add, r: dict) -> None:
    add("## 5. Jobs in flight: 32 and 64 clients at 1 s per upstream call")
    add("")
    add(
        "The worker started exactly as docker-compose starts it — `tabpfn-api worker`, no "
        "flags: the threads pool with `WORKER_CONCURRENCY` at its default over "
        f"`WORKER_PROCESSES`' default of two ({r.get('processes', '?')} processes with the "
        "supervisor; Celery's banner of the first: "
        f"concurrency {r.get('worker_settings', {}).get('concurrency', '?')}) — against as "
        "many threads "
        "calling tabpfn-client directly from one process (`bench/direct.py`). The emulator "
        f"answers every non-upload call after {r['latency_s']:.0f} s (`EMULATOR_LATENCY_S`), "
        "so a fit-predict (four delayed calls) takes about 4 s either way. Each client runs "
        f"{r['jobs_per_client']} job(s) back to back, in {_rounds(r)} rounds per side that "
        "alternate with the direct side's (direct first); a side's rate is all its jobs over "
        "all its seconds, and the rounds' own rates are in brackets. This machine's speed "
        "drifts within a minute by more than the margin under test, so one pair of runs "
        "could catch the two sides in different phases. One bench user sends every job, with "
        "`MAX_RUNNING_PER_USER=1000` (a setting, so the per-user cap does not limit this "
        "run) and the per-token pacing raised out of the way (`UPSTREAM_*_PER_MINUTE`)."
    )
    add("")
    add(
        "| clients | jobs | service jobs/s | direct jobs/s | **service / direct** | peak running "
        "| worker tree peak RSS (PSS) | emulator CPU ms/job (service / direct) |"
    )
    add("|---|---|---|---|---|---|---|---|")
    for n, s in r["sizes"].items():
        service, direct = s["service"], s["direct"]
        add(
            f"| {n} | {s['jobs']} | {_rate(service)} | {_rate(direct)} "
            f"| **{s['ratio']:.2f}×** | {service['peak_running']:.0f} "
            f"| {service['peak_rss_mb']:.0f} MB ({service['peak_pss_mb']:.0f} MB) "
            f"| {_cpu(service['emulator'])} / "
            f"{_cpu(direct['emulator'])} |"
        )
    add("")
    _inflight_cpu(add, r)
    retries = sum(s["direct"].get("retries", 0) for s in r["sizes"].values())
    retried = sum(s["service"].get("retried", 0) for s in r["sizes"].values())
    add(
        f"Jobs sent again after a connection to the emulator failed under them: {retries} on "
        f"the direct side (tabpfn-client's threads share one httpx client), {retried} on the "
        "service side (run again after the retry backoff: `attempts` > 1); the failed "
        "try's time is included."
    )
    stalled = sum(s["direct"].get("stalled", 0) for s in r["sizes"].values())
    if stalled:
        add(
            f"**{stalled} direct job(s) stalled** (over {STALLED_S:.0f} s: a call the "
            "emulator did not answer until its timeout, bench/direct.py): their rounds' "
            "rates, and the ratios built on them, do not measure the service."
        )
    add("")
    ratios = [s["ratio"] for s in r["sizes"].values()]
    peak_rss = max(s["service"]["peak_rss_mb"] for s in r["sizes"].values())
    add(
        f"Targets: service ≥ {INFLIGHT_TARGET:.1f}× direct at every size — "
        f"{_met(min(ratios) >= INFLIGHT_TARGET)}; the worker's process tree within "
        f"{RSS_TARGET_MB} MiB — {_met(peak_rss <= RSS_TARGET_MB)} (peak {peak_rss:.0f} MB, "
        f"{r['idle_rss_mb']:.0f} MB when idle and ready). RSS is the sum of VmRSS over the "
        "worker process and its descendants, sampled every 200 ms; PSS, in brackets, every "
        "2 s (reading it walks the node's whole memory map): it counts a page that forked "
        "processes share once, as a container's memory limit does, where summed RSS counts "
        "it in each."
    )
    one = r.get("one_process")
    if one:
        service = one["service"]
        add("")
        add(
            f"The same {one['clients']} clients on a node of **one process** "
            f"(`WORKER_PROCESSES=1`, the same slots on one interpreter's threads): "
            f"**{one['ratio']:.2f}×** ({_rate(service)} against {_rate(one['direct'])} jobs/s "
            f"direct in its own alternating rounds), peak RSS {service['peak_rss_mb']:.0f} MB. "
            "Two processes are the default on a node of two or more cores: see the analysis "
            "below."
        )
    largest = list(r["sizes"].values())[-1]["service"]
    at_peak = largest.get("connections_at_peak") or {}
    if at_peak:
        names = ", ".join(n or "(unnamed)" for n in at_peak.get("redis_names", []))
        add("")
        add(
            f"Connections of the one node when the most jobs were running "
            f"({at_peak.get('running', 0):.0f} running): **{at_peak['postgres']} PostgreSQL** "
            f"backends ({at_peak['postgres_active']} active at that instant; rows of "
            "pg_stat_activity whose client port is one of the worker's sockets) and "
            f"**{at_peak['redis']} Redis** clients (CLIENT LIST entries from the worker's "
            f"sockets; names: {names})."
        )
    add("")


def _pools(add, r: dict) -> None:
    add("## 5b. The pool, chosen on evidence: the candidates side by side")
    add("")
    add(
        f"Each candidate is a node of {r['clients']} slots (`--concurrency "
        f"{r['clients']}`) measured as section 5 measures the default: {r['clients']} "
        f"clients at {r['latency_s']:.0f} s per upstream call, {r['jobs_per_client']} "
        "job(s) each, in rounds that alternate with as many threads of direct tabpfn-client "
        "(bench/pools.py). Celery's **threads** pool over two processes (the default) and "
        "over one; its **gevent** pool, with the standard library monkey-patched and "
        "psycopg2 made cooperative (psycogreen) before anything else is imported, as gevent "
        "requires (bench/gevent_worker.py); and **prefork**, a process per slot, forked "
        "from the warm node, each with a database pool of two (at the pool's defaults its "
        "processes could ask PostgreSQL for more connections than its default "
        "`max_connections` of 100)."
    )
    add("")
    add(
        "| pool | Celery's banner (first process) | processes | service jobs/s "
        "| direct jobs/s | **service / direct** "
        "| peak running | node peak RSS (PSS) | idle and ready: RSS (PSS) "
        "| node CPU ms/job | PostgreSQL / Redis connections at peak "
        "| emulator CPU ms/job (service / direct) |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, c in r["candidates"].items():
        service, direct = c["service"], c["direct"]
        at_peak = service.get("connections_at_peak") or {}
        add(
            f"| {label} | {c['banner'].get('concurrency', '?')} | {c['processes']} "
            f"| {_rate(service)} | {_rate(direct)} | **{c['ratio']:.2f}×** "
            f"| {service['peak_running']:.0f} "
            f"| {service['peak_rss_mb']:.0f} MB ({service['peak_pss_mb']:.0f} MB) "
            f"| {c['idle_rss_mb']:.0f} MB ({c['idle_pss_mb']:.0f} MB) "
            f"| {service['cpu_ms_per_job'].get('worker node', 0):.0f} "
            f"| {at_peak.get('postgres', '?')} / {at_peak.get('redis', '?')} "
            f"| {_cpu(service['emulator'])} / {_cpu(direct['emulator'])} |"
        )
    add("")
    add(
        "Processes: the node's whole tree (the supervisor, its Celery processes, prefork's "
        "pool). RSS sums each process's resident pages, so pages forked processes share "
        "count once per process; PSS counts them once, as a container's memory limit does. "
        "Node CPU is all the node's processes per job, from /proc. The analysis below says "
        "what the choice rests on."
    )
    add("")


def _coldstart(add, r: dict) -> None:
    trials = r["trials"]
    add("## 6. Cold start: a fresh worker node's first jobs")
    add("")
    add(
        f"A fresh node (`tabpfn-api worker`, no flags) is spawned; the moment it reports ready "
        "(its warm-up — imports, the upstream's settings, database and Redis connections, each "
        "job statement once per pooled connection — runs before Celery says ready), "
        f"{r['jobs']} fit-predicts are submitted at once from {r['jobs']} clients, then the same "
        f"again twice. That is one trial; the section runs {len(trials)}, each on a node of its "
        "own, because one trial's rounds swing with the machine's speed by more than the margin "
        f"under test. Emulator latency {r['latency_s'] * 1000:.0f} ms per call. A job's time on "
        "the node is the wait for a slot to pick it up and claim it (202 at the client → "
        "started_at) plus its run (started_at → finished_at); the table gives each round's mean, "
        "and the CPU and minor page faults of the node's processes per job in each round (from "
        "/proc: in a forked process, a first write to a page it shares with the node's image "
        "copies that page)."
    )
    add("")
    add(
        "| trial | ready after | cold: queued + run | warm | warm again | **cold / later** "
        "| run alone: cold / later | node CPU ms/job (page faults/job) | emulator CPU ms/job |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    ratios, run_ratios = [], []
    for i, t in enumerate(trials, 1):
        cold, warm, again = (t["rounds"][k] for k in ("cold", "warm", "warm again"))
        ratio = _on_node(cold) / statistics.mean([_on_node(warm), _on_node(again)])
        run_ratio = cold["run_mean_s"] / statistics.mean([warm["run_mean_s"], again["run_mean_s"]])
        ratios.append(ratio)
        run_ratios.append(run_ratio)
        cells = " | ".join(
            f"{_s(x['queue_mean_s'])} + {_s(x['run_mean_s'])}" for x in (cold, warm, again)
        )
        emulator = " / ".join(_cpu(x["emulator"]) for x in (cold, warm, again))
        node = " / ".join(
            f"{x['node_cpu_ms_per_job']:.0f} ({x['node_minor_faults_per_job']:.0f})"
            if "node_cpu_ms_per_job" in x
            else "?"
            for x in (cold, warm, again)
        )
        add(
            f"| {i} | {_s(t['ready_s'])} | {cells} | **{ratio:.2f}×** | {run_ratio:.2f}× "
            f"| {node} | {emulator} |"
        )
    add("")
    d = r["direct"]
    add(
        "Direct tabpfn-client in a fresh process: importing it took "
        f"{_s(d['import_s'])}, the first fit-predict {_s(d['first_call_s'])}, later ones "
        f"{_s(d['later_calls_mean_s'])} on average ({_s(d['process_s'])} from spawn to "
        "the fourth call's end): its first call against its later ones "
        f"{d['first_call_s'] / d['later_calls_mean_s']:.2f}× (the first call fetches the "
        "upstream's settings and opens connections; the worker's warm-up does both before "
        "its first job)."
    )
    add("")
    median = statistics.median(ratios)
    add(
        "Target: a node's first jobs no slower than its later ones (their time on the node ≤ "
        f"{COLD_TARGET:.2f}× the mean of the two later rounds', the 10% for noise, in the median "
        f"trial) — **{median:.2f}×** (trials {_range(ratios)}; run alone: median "
        f"{statistics.median(run_ratios):.2f}×, trials {_range(run_ratios)}), "
        f"{_met(median <= COLD_TARGET)}."
    )
    add("")


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}×" if len(values) > 1 else f"{values[0]:.2f}×"


def _on_node(round_: dict) -> float:
    """A job's time on the node: the wait for a slot to pick it up and claim it, then its run."""
    return max(0.0, round_["queue_mean_s"]) + round_["run_mean_s"]


def _scaleout(add, r: dict) -> None:
    runs = r["runs"]
    add("## 7. Scale-out: two worker nodes against one")
    add("")
    add(
        f"{r['clients']} clients, {r['jobs']} fit-predicts, {r['latency_s']:.0f} s per "
        f"upstream call; nodes `tabpfn-api worker -n bench-w1@%h` (and `-n bench-w2@%h`), "
        f"each `WORKER_CONCURRENCY={r['concurrency']}`, sharing one PostgreSQL and Redis."
    )
    add("")
    add(
        "| nodes | jobs/s | peak running | job latency median | nodes' RSS peak "
        "| emulator CPU ms/job | succeeded | attempts ≠ 1 | models ≠ 1 per job | emulator fits |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|")
    for name, x in runs.items():
        c = x["checks"]
        add(
            f"| {name} | {x['jobs_per_s']:.2f} | {x['peak_running']:.0f} "
            f"| {_s(x['latency_median'])} | {x['peak_rss_mb']:.0f} MB | {_cpu(x['emulator'])} "
            f"| {c['succeeded']}/{c['jobs']} | {c['attempts_not_1']} | {c['models_not_1']} "
            f"| {c['emulator_fits']} |"
        )
    add("")
    two = runs["two nodes"]["checks"]
    once = all(
        x["checks"]["attempts_not_1"] == 0
        and x["checks"]["models_not_1"] == 0
        and x["checks"]["emulator_fits"] == x["checks"]["jobs"]
        and x["checks"]["succeeded"] == x["checks"]["jobs"]
        for x in runs.values()
    )
    split = ", ".join(str(v) for v in two["by_worker_process"].values())
    add(
        f"Targets: about 2× the jobs/s with two nodes (≥ {SCALE_TARGET}×) — "
        f"**{r['speedup']:.2f}×**, {_met(r['speedup'] >= SCALE_TARGET)}; no job ran twice "
        "(every job `succeeded` with `attempts == 1`, one `fitted_models` row per job, the "
        f"emulator counted one fit per job) — {_met(once)}. Jobs per worker process in the "
        f"two-node run: {split}."
    )
    add("")


def _claim(add, r: dict) -> None:
    add("## 8. Claim time at scale")
    add("")
    add(
        f"`shared.jobs.scheduling.claim_next()` timed in-process with **{r['jobs']:,} queued jobs "
        f"over {r['users']:,} users** (a database of its own, migrated, filled with one "
        f"`INSERT … SELECT generate_series` per table in {r['populate_s']:.1f} s, then "
        "`VACUUM ANALYZE`), `MAX_RUNNING_PER_USER=16`. Each claim is the whole decision: "
        "the candidates query, the user's row lock, the head job, the token's pacing "
        "reservation in Redis (Fernet decrypt + fingerprint included) and the guarded "
        f"UPDATE, committed. {r['claims']} claims after a first one "
        f"({_s(r['first_claim_s'])}, connections opened)."
    )
    add("")
    add("| | p50 | p99 | max |")
    add("|---|---|---|---|")
    idle = r.get("idle_accounts")
    cases = [("", r)]
    if idle:
        cases.append(
            (
                f", {idle['jobs']:,} jobs over {idle['users']} users beside "
                f"{idle['idle']:,} idle accounts",
                idle,
            )
        )
    for beside, case in cases:
        add(
            f"| `claim_next()`, the whole claim{beside} | {case['p50_s'] * 1000:.2f} ms "
            f"| {case['p99_s'] * 1000:.2f} ms | {case['max_s'] * 1000:.2f} ms |"
        )
        if "query_p50_s" in case:
            add(
                f"| the candidates query alone (one connection){beside} "
                f"| {case['query_p50_s'] * 1000:.2f} ms | {case['query_p99_s'] * 1000:.2f} ms | |"
            )
    add("")
    if idle:
        add(
            "Idle accounts (no job queued, never served: first in served order) are what a "
            "service has most of. Before session 19 the candidates query walked every account "
            "in served order: 48–281 ms a look with 20,000 of them beside one busy user "
            "(docs/scheduling.md)."
        )
        add("")
    worst = max(case["p99_s"] for _, case in cases)
    add(
        f"Target: a few ms (p99 ≤ {CLAIM_TARGET_S * 1000:.0f} ms) — "
        f"{_met(worst <= CLAIM_TARGET_S)}."
    )
    add("")
    add("The candidates query, `EXPLAIN (ANALYZE, BUFFERS)` after the claims:")
    add("")
    add("```")
    add(r["explain"])
    add("```")
    add("")


def _fairness(add, r: dict) -> None:
    noisy, burst = r["noisy"], r["burst"]
    add("## 9. Fairness: the noisy neighbour and the burst")
    add("")
    add(
        f"**Noisy neighbour.** A node with {noisy['slots']} slots (`WORKER_CONCURRENCY="
        f"{noisy['slots']}`, fewer than the backlog, as in issue 14's measurement; "
        f"`MAX_RUNNING_PER_USER=16`), {noisy['latency_s'] * 1000:.0f} ms per upstream call. "
        f"User A queues {noisy['backlog']} fit-predicts; user B then submits one."
    )
    add("")
    add("| B idle | B while A's backlog runs | **ratio** | A's jobs succeeded | A's drain |")
    add("|---|---|---|---|---|")
    a = noisy["a"]
    add(
        f"| {_s(noisy['b_idle_s'])} | {_s(noisy['b_busy_s'])} | **{noisy['ratio']:.2f}×** "
        f"| {a['succeeded']}/{a['jobs']} | {_s(a['drain_s'])} |"
    )
    add("")
    add(
        f"Target: B within a small multiple of its idle latency (≤ {FAIR_TARGET:.0f}×) — "
        f"{_met(noisy['ratio'] <= FAIR_TARGET)}. (Before the scheduler, issue 14 measured "
        "28.6×.)"
    )
    add("")
    add(
        f"**Burst.** One token allowed {burst['fits_per_window']} fits, "
        f"{burst['predictions_per_window']} predictions and {burst['uploads_per_window']} "
        f"uploads per {burst['window_s']:.0f}-s window on both sides (the emulator: "
        "`EMULATOR_RATE_LIMITS`, `EMULATOR_*_PER_MINUTE`, `EMULATOR_RATE_WINDOW_SCALE=5/60`; "
        "the service: `UPSTREAM_*_PER_MINUTE`, `UPSTREAM_RATE_WINDOW_SCALE=5/60`), the "
        f"worker as deployed (`tabpfn-api worker`). User A submits {burst['jobs']} "
        "fit-predicts at once, as a window opens; user B (another token) runs one job "
        "meanwhile."
    )
    add("")
    add(
        "| upstream windows start | jobs succeeded | attempts ≠ 1 | drain "
        "| minimum the limits allow | **drain / minimum** | upstream 429s | B idle "
        "| B during the burst | emulator CPU ms/job |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|")
    runs = [burst] + ([r["burst_clock"]] if "burst_clock" in r else [])
    for run in runs:
        each = run["burst"]
        start = run.get("window_start", "first_request").replace("_", " ")
        add(
            f"| {start} | {each['succeeded']}/{each['jobs']} | {each['attempts_not_1']} "
            f"| {_s(each['drain_s'])} | {_s(run['minimum_drain_s'])} "
            f"| **{run['drain_ratio']:.2f}×** | {run['http_429']} | {_s(run['b_idle_s'])} "
            f"| {_s(run['b_during_s'])} | {_cpu(run['emulator'])} |"
        )
    add("")
    add(
        "Where a fixed window starts, the cloud does not say: at the first request after "
        "the previous window ended (an INCR + EXPIRE limiter), or on the clock. The "
        "emulator does either (`EMULATOR_RATE_WINDOW_START`); the service's budget is a "
        "sliding log that keeps within both (docs/scheduling.md)."
    )
    add("")
    ratios = ", ".join(f"{x['b_ratio']:.2f}×" for x in runs)
    add(
        "The minimum: fixed windows admit ten fit-predicts each, so the last ten can start "
        f"no earlier than window {-(-burst['jobs'] // burst['fits_per_window'])} opens, and "
        "then take one job's idle time. "
        "Targets, in every run: every job succeeded — "
        f"{_met(all(x['burst']['succeeded'] == x['burst']['jobs'] for x in runs))}; drain ≤ "
        f"{BURST_TARGET}× the minimum — "
        f"{_met(all(x['drain_ratio'] <= BURST_TARGET for x in runs))}; few 429s (≤ 10% of "
        f"the jobs) — {_met(all(x['http_429'] <= x['jobs'] / 10 for x in runs))}; B within "
        f"{FAIR_TARGET:.0f}× its idle latency — "
        f"{_met(all(x['b_ratio'] <= FAIR_TARGET for x in runs))} "
        f"({ratios}). "
        "(Before the scheduler, issue 14 measured 30 of 60 jobs failed.)"
    )
    for run in runs:
        if run["burst"]["failed"]:
            add("")
            add(f"Errors of failed jobs (first five): {run['burst']['failed']}")
    add("")
