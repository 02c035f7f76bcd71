"""docs/benchmarks.md from one run's results: the machine, the settings, the tables."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

from bench.report_api import render_api
from bench.report_first_job import render_first_job
from bench.report_fleet import render_fleet

LATENCY_TARGET = 1.10  # service ≤ 1.10 × direct
THROUGHPUT_TARGET = 0.8  # service ≥ 0.8 × direct


def machine_facts() -> dict:
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "date": subprocess.run(["date"], capture_output=True, text=True).stdout.strip(),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": int(meminfo[1]) / 1024 / 1024,
        "python": platform.python_version(),
        "load_before": os.getloadavg()[0],
        "kernel": platform.release(),
        "versions": {
            name: version(name)
            for name in ("tabpfn-client", "fastapi", "uvicorn", "celery", "sqlalchemy", "bcrypt")
        },
    }


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def render(facts: dict, results: dict) -> str:
    settings = results["settings"]
    results["args"]
    lines: list[str] = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add(
        "What the service costs over calling TabPFN directly. Every figure below comes from "
        "one run of `make bench` (`python -m bench`), which starts its own stack — a fresh "
        "database, the emulator, the API, the workers — measures the service and the plain "
        "`tabpfn-client` side by side against the same emulator, and rewrites this file. "
        "Re-run it on your machine before quoting a number."
    )
    add("")
    add("## Machine and settings")
    add("")
    add(f"- Date: {facts['date']}")
    add(
        f"- Machine: **{facts['cores']} cores** ({facts['cpu']}), "
        f"{facts['memory_gb']:.0f} GB RAM, Linux {facts['kernel']}, Python {facts['python']}"
    )
    add(
        f"- Services: {facts.get('services', '?')} (PostgreSQL {facts.get('postgres', '?')}, "
        f"Redis {facts.get('redis', '?')}); everything — PostgreSQL, Redis, emulator, two API "
        "processes, the Celery workers, the direct client and the load generator — shares "
        "these cores."
    )
    add("- Versions: " + ", ".join(f"{name} {v}" for name, v in facts["versions"].items()))
    add(
        f"- Emulator: a fixed **{settings.latency_s * 1000:.0f} ms per upstream API call** "
        "(`EMULATOR_LATENCY_S`; uploads to signed URLs are not delayed), "
        f"`EMULATOR_MAX_ROWS={settings.emulator_max_rows}`. A fit + predict through "
        "tabpfn-client makes four delayed calls (prepare train upload, fit, prepare test "
        "upload, predict) plus two uploads. The emulator's model is "
        f"`EMULATOR_MODEL={getattr(settings, 'emulator_model', 'forest')}`"
        + (
            " (class frequencies: near-zero CPU, so the figures measure the service, not "
            "the stand-in upstream; the TabPFN cloud's compute is not on our machine)."
            if getattr(settings, "emulator_model", "forest") == "trivial"
            else " (a 50-tree random forest: real CPU work on every fit)."
        )
        + " Every ratio below has the emulator's own CPU per job beside it "
        "(`GET /_emulator/stats`, read before and after each side)."
    )
    add(
        f"- Service: `tabpfn-api api` (one uvicorn process), `tabpfn-api worker "
        f"--concurrency {settings.worker_concurrency}` (Celery threads pool, over "
        "`WORKER_PROCESSES`' default of two processes) for sections "
        "1-4; sections 5-9 start their own nodes, sections 10-11 stacks of their own. "
        "`MAX_RUNNING_PER_USER=1000` and the "
        "per-token pacing raised out of the way (`UPSTREAM_*_PER_MINUTE`, "
        "`UPSTREAM_*_PER_HOUR`) except in section 9, `RATE_LIMIT_PER_MINUTE=0`, "
        "`API_KEY_CACHE_S=60` (a second API process with "
        f"`API_KEY_CACHE_S=0` for the cache-off case), `MAX_REQUEST_BYTES="
        f"{settings.max_request_bytes}`, `LOG_LEVEL=INFO`."
    )
    add(
        "- Data: a classification table of 500 rows × 10 numeric features (3 classes), "
        "100 test rows, `output: probabilities`. **Every job uses a table of its own** "
        "(a new seed per repetition): tabpfn-client deduplicates uploads by hash per "
        "account, so repeating a table would let later runs skip their uploads. The "
        "service and the direct client use separate emulator accounts, so repetition *i* "
        "sends the same table both ways: the pair does the same upstream work."
    )
    warm = results.get("warm_up", {})
    if warm:
        add(
            f"- Warm-up before measuring: {2 * settings.worker_concurrency} jobs, so each "
            "worker process has imported tabpfn-client and fetched the upstream's limits "
            f"once (the very first job took {_s(warm['first_job_s'])}). The same table sent "
            "through both paths gave probabilities that differ by at most "
            f"{warm['max_probability_difference']:.2g}."
        )
    resent = results.get("resent_messages", 0)
    add(
        f"- The sweeper (`tabpfn-api beat`, `SWEEPER_INTERVAL_S=5`, `QUEUED_TIMEOUT_S=30`) "
        f"ran throughout; it had to resend **{resent}** job message(s) whose first "
        "delivery never reached a worker"
        + (" — those jobs waited ≥ 30 s and weigh on the figures below." if resent else ".")
    )
    foreign = results.get("foreign_cpu_s", 0.0)
    # Measured over the shared stack's sections only (1-9): 10-11 run on stacks of their own.
    measured_s = results.get("shared_stack_s", results.get("wall_s", 1))
    add(
        f"- Whole run: {results.get('wall_s', 0):.0f} s; 1-minute load average before it "
        f"started: {facts['load_before']:.2f}. Other work on the machine used "
        f"**{foreign:.0f} CPU-seconds** while sections 1-9 ran "
        f"({foreign / max(measured_s, 1):.2f} of the {facts['cores']} cores on "
        "average); anything above a few percent of a core skews every figure below."
    )
    _machine_speed(add, results.get("machine_speed"))
    add("")

    if "latency" in results:
        _latency(add, results["latency"])
    if "throughput" in results:
        _throughput(add, results["throughput"], settings)
    if "light" in results:
        _light(add, results["light"], results.get("latency"))
    if "floor" in results:
        _floor(add, results["floor"])
    if "firstjob" in results:
        render_first_job(add, results["firstjob"], results.get("latency"))
    if "submit" in results and "auth" in results:
        _submit(add, results["submit"], results["auth"], settings)
    if "large" in results:
        _large(add, results["large"], settings)
    else:
        add("## 4. Large data")
        add("")
        add("Not run (`--quick`).")
        add("")
    _profiles(add, results.get("profiles", {}))
    render_fleet(add, results)
    render_api(add, results)
    analysis = Path(__file__).with_name("ANALYSIS.md")
    if analysis.exists():
        add(analysis.read_text().rstrip())
        add("")
    add("## Reproducing")
    add("")
    add(
        "`make bench` installs the project and what only the bench needs (the profiler, and "
        "gevent for section 5b: `bench/requirements.txt`), "
        "runs `python -m bench` and rewrites this file; the raw numbers and py-spy's "
        "collapsed stacks are kept in the temporary directory the run names at its end. "
        "Options: `python -m bench --help` (emulator latency, worker concurrency, "
        "clients, repetitions, rows of the large case; "
        "`--quick` for a smoke run; `--only latency,throughput` (or `floor`, `firstjob`, "
        "`inflight`, `pools`, `coldstart`, `scaleout`, `claim`, `fairness`, `submitload`, "
        "`uploads`) "
        "runs some sections and "
        "prints their figures as JSON, leaving this file alone; "
        "`--render DIR/results.json` rewrites this file from a "
        "kept run, e.g. after editing `bench/ANALYSIS.md`, the hand-written analysis "
        "below the tables). It uses DATABASE_URL/REDIS_URL, else PostgreSQL and "
        "Redis on 127.0.0.1 (Redis database 15, which must be empty), else embedded "
        "servers, and stops everything it started. `python -m bench.floor` measures "
        "section 2c alone, on a stack of its own."
    )
    add("")
    return "\n".join(lines)


# The shared stack's sections by the numbers the headings give them.
_SECTION_NUMBERS = {
    "latency": "1",
    "throughput": "2",
    "light": "2b",
    "floor": "2c",
    "firstjob": "1c",
    "submit": "3a-b",
    "auth": "3c",
    "profiles": "profiles",
    "large": "4",
    "inflight": "5",
    "pools": "5b",
    "coldstart": "6",
    "scaleout": "7",
    "claim": "8",
    "fairness": "9",
}


def _machine_speed(add, speed: dict | None) -> None:
    """The probes of bench/machine_speed.py: before and after each section."""
    if not speed:
        return
    sections = speed["sections"]
    start = speed["start"]
    memory = ""
    if "memory_ms" in start:
        memory = f" and the memory-bound one {start['memory_ms']:.1f} ms"
    add(
        "- Machine speed (`bench/machine_speed.py`): a fixed piece of interpreter work "
        f"took **{start['cpu_ms']:.1f} ms of CPU** before the first section{memory}. The "
        "same probes before and after each section, with the stack idle, in ms (lower is "
        "faster; steal is CPU time the hypervisor gave to others while ours waited). "
        "Neither other processes' CPU nor steal shows a slow host; the interpreter probe "
        "does: over fifteen runs of section 2b in session 20 it followed the CPU per job "
        "of both sides at r = 0.92-0.93 (bench/ANALYSIS.md). A section whose probes read "
        "well above the run's fastest is one to measure again."
    )
    add("")
    add("| probe | " + " | ".join(_SECTION_NUMBERS.get(n, n) for n in sections) + " |")
    add("|---|" + "---|" * len(sections))
    rows = [
        ("interpreter, before", "before_ms", "{:.1f}"),
        ("interpreter, after", "after_ms", "{:.1f}"),
        ("memory-bound, before", "memory_before_ms", "{:.1f}"),
        ("memory-bound, after", "memory_after_ms", "{:.1f}"),
        ("steal, s", "steal_s", "{:.2f}"),
    ]
    for label, key, fmt in rows:
        if all(key in b for b in sections.values()):
            add(f"| {label} | " + " | ".join(fmt.format(b[key]) for b in sections.values()) + " |")


def _latency(add, r: dict) -> None:
    service, direct = r["service"], r["direct"]
    ratio = service["median"] / direct["median"]
    ratio90 = service["p90"] / direct["p90"]
    add("## 1. Job latency: one fit-predict, service vs direct")
    add("")
    add(
        f"{r['reps']} jobs each way, one at a time, interleaved. Service: `POST "
        "/api/v1/jobs/fit-predict`, then the result long-poll `GET "
        "/api/v1/jobs/{id}/result?wait=30`, which answers with the result the moment the job "
        "ends (JSON serialization of the body included). Direct: "
        "`ServiceClient.fit_with_result` + `ServiceClient.predict` with the token in "
        "`ClientOptions` headers, in a process of its own."
    )
    add("")
    add("| | median | p90 | min | max |")
    add("|---|---|---|---|---|")
    one = r.get("service_one_request")
    rows = [("service", service), ("direct tabpfn-client", direct)]
    if one:
        rows.insert(1, ("service, one request (`POST …?wait=30`)", one))
    for name, s in rows:
        add(f"| {name} | {_s(s['median'])} | {_s(s['p90'])} | {_s(s['min'])} | {_s(s['max'])} |")
    add(f"| **service / direct** | **{ratio:.2f}×** | {ratio90:.2f}× | | |")
    if one:
        one_ratio = one["median"] / direct["median"]
        add(
            f"| **service, one request / direct** | **{one_ratio:.2f}×** | "
            f"{one['p90'] / direct['p90']:.2f}× | | |"
        )
        added_one = (one["median"] - direct["median"]) * 1000
        added_two = (service["median"] - direct["median"]) * 1000
        add("")
        add(
            "One request: the submit with `?wait=30` answers with the ended job and its "
            "result (api/submit_wait.py), sparing the second request's parsing, "
            "authentication and first read; the same tables' worth of work, interleaved with "
            f"the rows above on tables of its own. It added {added_one:.0f} ms to a job, the "
            f"two requests {added_two:.0f} ms."
        )
    add("")
    emulator = r.get("emulator_cpu_ms_per_job")
    if emulator:
        add(
            f"Emulator CPU per job: {emulator['service']:.1f} ms (service side), "
            f"{emulator['direct']:.1f} ms (direct side)."
        )
        add("")
    overhead = service["median"] - direct["median"]
    add(
        f"Target: service ≤ {LATENCY_TARGET:.2f}× direct (median) — "
        f"{_met(ratio <= LATENCY_TARGET)}. "
        f"The service adds **{overhead * 1000:.0f} ms** per job here; a cost of that size "
        f"stays under 10% once a direct fit + predict takes {overhead / 0.10:.1f} s or more "
        "(TabPFN's own fits on real data usually take longer than that; the emulator's take "
        f"{_s(direct['median'])})."
    )
    add("")
    add("Where a service job's time goes (medians; server-side timestamps from the job):")
    add("")
    add("| part | median | p90 |")
    add("|---|---|---|")
    labels = {
        "submit_s": "submit: POST until 202 (parse, validate, Parquet, insert, enqueue)",
        "queue_s": "queued: 202 at the client → started_at (Redis, Celery pickup, claim)",
        "run_s": "run: started_at → finished_at (load, upstream fit + predict, store)",
        "notify_s": "notify: finished_at → the result at the client (result long-poll)",
    }
    for key, label in labels.items():
        add(f"| {label} | {_ms(r['parts'][key]['median'])} | {_ms(r['parts'][key]['p90'])} |")
    add(
        f"| *for comparison: the direct fit + predict* | {_ms(direct['median'])} "
        f"| {_ms(direct['p90'])} |"
    )
    add("")


def _mean_rates(r: dict) -> tuple[float, float]:
    """A throughput section's mean jobs/s over its rounds: (service, direct)."""
    return tuple(
        sum(r[f"{side}_jobs_per_s"]) / len(r[f"{side}_jobs_per_s"])
        for side in ("service", "direct")
    )


def _throughput(add, r: dict, settings) -> None:
    service, direct = _mean_rates(r)
    ratio = service / direct
    add("## 2. Throughput: concurrent clients")
    add("")
    add(
        f"{r['jobs']} fit-predict jobs from {r['clients']} concurrent clients through the "
        f"service (worker `--concurrency {settings.worker_concurrency}`), against "
        f"{r['clients']} threads calling tabpfn-client directly; {r['rounds']} round(s) each, "
        "alternating, mean of the rounds. All clients start together, and a round ends with "
        "its slowest client: the fewer jobs per client, the more those two moments weigh."
    )
    add("")
    add("| | jobs/s (per round) | mean jobs/s | job latency median | p90 |")
    add("|---|---|---|---|---|")
    add(
        f"| service | {', '.join(f'{x:.2f}' for x in r['service_jobs_per_s'])} | {service:.2f} "
        f"| {_s(r['service_latency']['median'])} | {_s(r['service_latency']['p90'])} |"
    )
    add(
        f"| direct tabpfn-client | {', '.join(f'{x:.2f}' for x in r['direct_jobs_per_s'])} | "
        f"{direct:.2f} | {_s(r['direct_latency']['median'])} | {_s(r['direct_latency']['p90'])} |"
    )
    add(f"| **service / direct** | | **{ratio:.2f}×** | | |")
    add("")
    add(f"Target: service ≥ {THROUGHPUT_TARGET:.1f}× direct — {_met(ratio >= THROUGHPUT_TARGET)}.")
    emulator = r.get("emulator_cpu_ms_per_job")
    if emulator:
        add(
            f"Emulator CPU per job (`GET /_emulator/stats`): {emulator['service']:.1f} ms "
            f"(service side), {emulator['direct']:.1f} ms (direct side)."
        )
    add("")
    cpu = r["cpu_ms_per_job"]
    add(
        "CPU per job, by process, during these runs (from /proc; PostgreSQL and Redis are "
        "the whole servers, so other databases' background work counts too):"
    )
    add("")
    add("| process | service run: CPU ms per job | direct run: CPU ms per job |")
    add("|---|---|---|")
    for role in cpu["service"]:
        add(f"| {role} | {cpu['service'][role]:.0f} | {cpu['direct'].get(role, 0):.0f} |")
    add(
        f"| **all** | **{sum(cpu['service'].values()):.0f}** "
        f"| **{sum(cpu['direct'].values()):.0f}** |"
    )
    add(
        f"| cores busy on average (of {os.cpu_count()}) | {r['cores_busy']['service']:.2f} "
        f"| {r['cores_busy']['direct']:.2f} |"
    )
    add("")
    threads = r.get("thread_ms_per_job")
    if threads:
        add(
            "By thread (ms per job): the API's event loop "
            f"{threads['api_main']:.1f} and its thread pool (the routes' database work, "
            f"checks and encodes) {threads['api_other']:.1f}; in the worker processes, "
            f"Celery's consumer (receiving, acknowledging, task events) "
            f"{threads['worker_main']:.1f} and the job slots with the lease keeper and "
            f"decoders {threads['worker_other']:.1f}."
        )
        add("")
    parts = r.get("service_parts")
    if parts:
        add(
            "Where a service job's time went in these runs (server-side timestamps, as in "
            "section 1; medians, p90 in brackets): "
            + ", ".join(
                f"{name} {_s(parts[key]['median'])} ({_s(parts[key]['p90'])})"
                for name, key in (
                    ("submit", "submit"),
                    ("queued", "queue"),
                    ("run", "run"),
                    ("notify", "notify"),
                )
            )
            + f"; the direct fit + predict took {_s(r['direct_latency']['median'])}."
        )
        add("")


def _floor(add, r: dict) -> None:
    add("## 2c. The path's floor: what the service's guarantees cost")
    add("")
    add(
        "The path a job takes through the service (a JSON submit over HTTP, its tables "
        "checked and stored as Parquet in PostgreSQL, a wake-up through Redis, a worker that "
        "claims the row, makes tabpfn-client's calls and stores the result, a long-poll "
        "answered when the end is published) built with nothing else: no authentication, "
        "Celery (and so no Flower), scheduler, pacing, leases, stages, idempotency, webhooks, "
        "ORM or logging (`bench/floor.py`; the same table checks and Parquet encode, the "
        "same tabpfn-client calls as the direct side, uvicorn with httptools and uvloop). "
        "Fit-predicts one at a time, the three ways interleaved on the same stack, the "
        "first five of each way left out."
    )
    add("")
    add("| per call | jobs each way | direct | service | floor | **service − floor** |")
    add("|---|---|---|---|---|---|")
    for row in r["rows"]:
        direct = row["direct_ms"]
        service, floor = row["service"]["total"], row["floor"]["total"]
        add(
            f"| {row['latency_s'] * 1000:.0f} ms | {row['reps']} | {direct:.1f} ms | "
            f"+{service - direct:.1f} ms ({service / direct:.3f}×) | "
            f"+{floor - direct:.1f} ms ({floor / direct:.3f}×) | "
            f"**{service - floor:.1f} ms** |"
        )
    add("")
    add(
        "Where the difference lies (medians in ms; split as in section 1: the submit until "
        "its 202, the 202 until the claim, the claim until the result is stored, the store "
        "until the result is at the client; a negative queue means the claim began before "
        "the 202 reached the client):"
    )
    add("")
    add("| per call | way | submit | queued | run − direct | notify |")
    add("|---|---|---|---|---|---|")
    for row in r["rows"]:
        for way in ("service", "floor"):
            parts = row[way]
            add(
                f"| {row['latency_s'] * 1000:.0f} ms | {way} | {parts['submit']:.1f} | "
                f"{parts['queue']:.1f} | {parts['run'] - row['direct_ms']:+.1f} | "
                f"{parts['notify']:.1f} |"
            )
    add("")
    add(
        "The floor is what the path alone costs on this machine; the difference is what the "
        "service's guarantees cost on the same path (bench/ANALYSIS.md, session 21)."
    )
    add("")


def _light(add, r: dict, at_default: dict | None) -> None:
    latency, throughput = r["latency"], r["throughput"]
    ms = r["latency_s"] * 1000
    add(f"## 2b. A faster upstream: sections 1 and 2 at {ms:.0f} ms per call")
    add("")
    add(
        f"The same two measurements, with the emulator answering each call after {ms:.0f} ms "
        f"(issue 13 first measured at this point): {latency['reps']} jobs each way one at a "
        f"time, then {throughput['jobs']} jobs from {throughput['clients']} clients in "
        f"{throughput['rounds']} alternating round(s) per side, each job a table of its own. "
        "Reported beside the targets, not instead of them: what the service adds to a job is "
        "about fixed, so a direct job half as long makes the same cost weigh twice as much."
    )
    add("")
    lat_s, lat_d = latency["service"]["median"], latency["direct"]["median"]
    tp_s, tp_d = _mean_rates(throughput)
    add("| | service | direct tabpfn-client | **service / direct** | target (sections 1, 2) |")
    add("|---|---|---|---|---|")
    add(
        f"| latency, one at a time (median) | {_s(lat_s)} | {_s(lat_d)} | "
        f"**{lat_s / lat_d:.2f}×** | ≤ {LATENCY_TARGET:.2f}× |"
    )
    one = latency.get("service_one_request")
    if one:
        add(
            f"| latency, one request (`?wait=30`) | {_s(one['median'])} | {_s(lat_d)} | "
            f"**{one['median'] / lat_d:.2f}×** | ≤ {LATENCY_TARGET:.2f}× |"
        )
    add(
        f"| throughput, {throughput['clients']} clients (jobs/s, mean of rounds) | {tp_s:.2f} "
        f"| {tp_d:.2f} | **{tp_s / tp_d:.2f}×** | ≥ {THROUGHPUT_TARGET:.1f}× |"
    )
    add("")
    added = (lat_s - lat_d) * 1000
    line = f"The service added **{added:.0f} ms** to a job here"
    if at_default:
        at = (at_default["service"]["median"] - at_default["direct"]["median"]) * 1000
        line += f", {at:.0f} ms in section 1"
    parts = latency["parts"]
    add(
        line
        + " (medians: submit "
        + f"{_ms(parts['submit_s']['median'])}, queued {_ms(parts['queue_s']['median'])}, "
        + f"run {_ms(parts['run_s']['median'])} against the direct "
        + f"{_ms(lat_d)}, notify {_ms(parts['notify_s']['median'])})."
    )
    cpu = throughput["cpu_ms_per_job"]
    emulator = throughput.get("emulator_cpu_ms_per_job", {})
    add(
        f"With {throughput['clients']} clients, all processes together spent "
        f"{sum(cpu['service'].values()):.0f} ms of CPU per service job against "
        f"{sum(cpu['direct'].values()):.0f} per direct one (cores busy "
        f"{throughput['cores_busy']['service']:.2f} and {throughput['cores_busy']['direct']:.2f}"
        f" of {os.cpu_count()}); the emulator's share: {emulator.get('service', 0):.1f} and "
        f"{emulator.get('direct', 0):.1f} ms."
    )
    add("")


def _submit(add, r: dict, auth: dict, settings) -> None:
    add("## 3. Submit latency and the cost of authentication")
    add("")
    add(
        "`POST /api/v1/jobs/fit` with a 500 × 10 table, one at a time: with the workers "
        f"idle (each job waited for before the next), and while {r.get('background_jobs', 0)} "
        "fit-predict jobs from 8 background clients keep the workers and the emulator busy."
    )
    add("")
    add("| workers | n | p50 | p90 | p99 | max |")
    add("|---|---|---|---|---|---|")
    for name in ("idle", "busy"):
        s = r[name]
        add(
            f"| {name} | {s['n']} | {_ms(s['median'])} | {_ms(s['p90'])} | {_ms(s['p99'])} "
            f"| {_ms(s['max'])} |"
        )
    add("")
    add(
        f"Requests per second from {auth['threads']} keep-alive clients for "
        f"{auth['duration_s']:.0f} s each (workers idle):"
    )
    add("")
    add("| request | requests/s | failures |")
    add("|---|---|---|")
    for name, c in auth["cases"].items():
        add(f"| {name} | {c['rps']:.1f} | {c['failures']} |")
    add("")


def _large(add, r: dict, settings) -> None:
    shape = r["shape"]
    add("## 4. Large data")
    add("")
    add(
        f"fit-predict with {shape['rows']:,} training rows × {shape['features']} features "
        f"and {shape['test_rows']:,} test rows. Peak memory is VmHWM from /proc, reset "
        "(`clear_refs`) before each case: the API process, and the worker pool process "
        "that ran the job; growth is the peak minus the RSS before the case. Time to "
        "result includes submit, queue, run and the first GET /result; the GET /result "
        f"column is the median of three more fetches of the {shape['test_rows']:,}-row "
        "result. A negative 'queued' means the worker claimed the job before the 202 "
        "reached the client."
    )
    add("")
    add(
        "| case | request size | time to result | submit | queued | run | GET /result "
        "| API peak (growth) | worker peak (growth) |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    for name, c in r["cases"].items():
        size = r["sizes"].get(name)
        size_text = f"{size / 1e6:.1f} MB" if size else ""
        if "error" in c:
            add(f"| {name} | {size_text} | failed: {c['error']} | | | | | | |")
        elif name.startswith("direct"):
            add(
                f"| {name} | | {_s(c['total_s'])} | | | | | client process "
                f"{c['client_peak_mb']:.0f} MB ({c['client_growth_mb']:+.0f} MB) | |"
            )
        else:
            add(
                f"| {name} | {size_text} | {_s(c['total_s'])} | {_s(c['submit_s'])} "
                f"| {_s(c['queue_s'])} | {_s(c['run_s'])} | {_s(c['result_again_s'])} "
                f"| {c['api_peak_mb']:.0f} MB ({c['api_growth_mb']:+.0f} MB) "
                f"| {c['worker_peak_mb']:.0f} MB ({c['worker_growth_mb']:+.0f} MB) |"
            )
    if not r["upload"]["supported"]:
        add(
            "| Parquet upload | | **pending**: the multipart variant of `POST "
            "/jobs/fit-predict` is not in the API yet | | | | | | |"
        )
        add("| CSV upload | | **pending** (as above) | | | | | | |")
    add("")


def _profiles(add, profiles: dict) -> None:
    add("## Profiles: where the service's time goes")
    add("")
    if "skipped" in profiles or not profiles:
        add(f"Not profiled: {profiles.get('skipped', 'not run')}.")
        add("")
        return
    add(
        "Benchmarks 1 and 2 run again with py-spy (200 Hz, non-blocking) attached: to every "
        "worker pool process (wall-clock samples inside `run_job`, waiting included: what "
        "a job waits for), to the API process (samples of threads that are not idle — the "
        "event loop's `select` and idle pool threads are dropped, waits on PostgreSQL and "
        "Redis are kept) and, for benchmark 1, to the direct client (inside its fit + "
        "predict). Each sample is counted once, in the first category of the list whose "
        "marker is on its stack (`bench/profiling.py`); ms per job = samples / 200 Hz / jobs. "
        "py-spy itself needs CPU, so profiled jobs run 10–20% slower than in the tables "
        "above: read the shares and relative sizes, not the absolute milliseconds."
    )
    add("")
    for name, p in profiles.items():
        title = "1, one job at a time" if name == "latency" else "2, 8 concurrent clients"
        add(f"### Benchmark {title} ({p['jobs']} jobs)")
        add("")
        sides = [("worker", "Worker: wall time in run_job")]
        if "direct" in p:
            sides.append(("direct", "Direct tabpfn-client: wall time in fit + predict"))
        sides.append(("api", "API: busy time, all requests of the jobs"))
        for side, heading in sides:
            summary = p[side]
            add(f"{heading} — {summary['per_job_ms']:.0f} ms per job:")
            add("")
            add("| category | ms per job | share |")
            add("|---|---|---|")
            for category, share, ms in summary["split"]:
                add(f"| {category} | {ms:.1f} | {share:.1f}% |")
            add("")
    add("")
