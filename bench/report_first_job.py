"""docs/benchmarks.md, section 1c: a caller's cold start (bench/first_job.py)."""

from __future__ import annotations

WAYS = {
    "direct": "direct: tabpfn-client's `TabPFNClassifier`, fit then predict_proba",
    "curl": "service: one `curl` request, `POST /jobs/fit-predict?wait=60`",
    "sdk client": "service: the Python SDK's `Client.fit_predict(..., wait=60)`",
    "sdk estimator": "service: the Python SDK's `RemoteTabPFNClassifier` (a fit job, then a "
    "predict job)",
}


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def render_first_job(add, r: dict, section_1: dict | None) -> None:
    medians, emulator = r["medians"], r["emulator_cpu_ms_per_job"]
    add("## 1c. A caller's cold start: the first job of a fresh process")
    add("")
    add(
        "Sections 1 and 2 compare warm callers: the direct side there is a process that "
        "imported tabpfn-client and called the upstream before. A script, a pipeline step, a "
        "cron job or a notebook's first cell starts cold: it imports tabpfn-client (with "
        "pandas and scikit-learn) and its first fit fetches the upstream's settings. Through "
        "the service a caller needs one HTTP request; the import and the settings are the "
        "worker's, paid once per node before its first job (section 6). Here each way runs "
        f"as a fresh process, {r['trials']} times, interleaved (`bench/first_job.py`, the "
        "scripts in `bench/fresh/`), each reading a JSON file of the same kind from disk (500 "
        "× 10 train rows, 100 test rows, a table of its own per job; the direct side and "
        "curl get the same table). Times run from the spawn to the result, by one clock; "
        "the Python processes then make a second fit-predict, to show what the same process "
        "pays once warm. The service is the run's warm stack."
    )
    add("")
    add(
        "| way (a fresh process) | spawn → result | of which start and imports | first job "
        "| a second job, same process | emulator CPU ms/job |"
    )
    add("|---|---|---|---|---|---|")
    for side, label in WAYS.items():
        m = medians[side]
        add(
            f"| {label} | **{_time(m['first_s'])}** | {_time(m.get('start_and_imports_s'))} "
            f"| {_time(m.get('first_job_s'))} | {_time(m.get('second_job_s'))} "
            f"| {emulator[side]:.1f} |"
        )
    add("")
    direct = medians["direct"]["first_s"]
    ratios = ", ".join(
        f"{name} **{medians[side]['first_s'] / direct:.2f}×**"
        for side, name in (
            ("curl", "curl"),
            ("sdk client", "the SDK's Client"),
            ("sdk estimator", "the SDK's estimator"),
        )
    )
    add(
        f"A fresh process's first fit-predict through the service, against the same by hand "
        f"(medians): {ratios}. No target is set for it; it is what a caller that starts cold "
        "saves, beside sections 1 and 2, which hold for callers that stay warm."
    )
    add("")
    notes = [
        "The direct side's first job in a process makes one upstream call more than its "
        "later ones (`GET /tabpfn/get_settings`): "
        f"{_time(medians['direct']['first_job_s'])} against "
        f"{_time(medians['direct']['second_job_s'])}.",
        "The SDK's estimator is a scikit-learn estimator: `fit` runs a fit job and "
        "`predict_proba` a predict job, so a fit-predict pays the service's fixed cost twice; "
        "`Client.fit_predict` is one job. Its start includes importing scikit-learn, as "
        "tabpfn-client's does.",
    ]
    if section_1:
        warm = section_1["direct"]["median"]
        notes.append(
            f"For comparison, section 1's warm direct fit-predict: {_time(warm)}; its "
            f"one-request service job: {_time(section_1['service_one_request']['median'])}."
            if "service_one_request" in section_1
            else f"For comparison, section 1's warm direct fit-predict: {_time(warm)}."
        )
    for note in notes:
        add(f"- {note}")
    add("")
