"""Upload memory: the API's peak growth for CSV and Parquet files of 10, 100 and 500 MiB.

python -m bench.uploads                 # 10, 100 and 500 MiB, CSV and Parquet
python -m bench.uploads --sizes 10,100  # fewer sizes
python -m bench --only uploads          # the same, as a section of `make bench`

A stack of its own, only what an upload touches: a fresh database, the
emulator and one API process (no worker: the jobs stay queued and are
canceled after each case). Each file is the test set of a fit-predict
(test sets have no upstream row limit) and is written to disk and streamed
from there, so the benchmark client holds no copy. The API's VmHWM is reset
before each upload; its growth is the upload's cost.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.memory import cpu_seconds, memory_kb, reset_peak_memory
from bench.stack import SECRET_KEY, SERVICE_TOKEN, STOP_TIMEOUT_S, start_in
from cli.ports import free_port
from cli.supervisor import wait_for_http
from cli.throwaway import (
    find_services,
    stack_env,
    throwaway_database,
)

BLOCK_ROWS = 25_000  # one block: 25,000 × 20 (18 numbers, a word, a date) ≈ 4.4 MiB of CSV


def _block(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    columns = {f"f{j}": np.round(rng.normal(size=BLOCK_ROWS), 6) for j in range(18)}
    columns["kind"] = rng.choice(["red", "green", "blue"], size=BLOCK_ROWS)
    columns["day"] = np.datetime_as_string(
        np.datetime64("2024-01-01") + rng.integers(0, 365, BLOCK_ROWS).astype("timedelta64[D]")
    )
    return pd.DataFrame(columns)


def write_file(path: Path, fmt: str, size_mib: int) -> int:
    """A file of about `size_mib` MiB, written block by block; returns its rows."""
    target, rows = size_mib * 2**20, 0
    if fmt == "csv":
        with path.open("wb") as out:
            seed = 0
            while out.tell() < target:
                block = _block(seed)
                out.write(block.to_csv(index=False, header=seed == 0).encode())
                rows, seed = rows + len(block), seed + 1
        return rows
    first = pa.Table.from_pandas(_block(0), preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(first, sink)
    blocks = max(1, round(target / sink.getvalue().size))
    with pq.ParquetWriter(path, first.schema) as writer:
        for seed in range(blocks):
            table = first if seed == 0 else pa.Table.from_pandas(_block(seed), preserve_index=False)
            writer.write_table(table)
            rows += table.num_rows
    return rows


# A train set with the test files' columns.
TRAIN = _block(0).iloc[:4].assign(y=["a", "b", "a", "b"]).to_csv(index=False).encode()


def _register(client: httpx.Client) -> dict[str, str]:
    response = client.post("/auth/setup", json={"tabpfn_token": SERVICE_TOKEN})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['api_key']}"}


def measure(client: httpx.Client, headers: dict, pid: int, path: Path, fmt: str) -> dict:
    reset = reset_peak_memory(pid)
    before = memory_kb(pid)
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    with path.open("rb") as file:
        response = client.post(
            "/jobs/fit-predict",
            headers=headers,
            data={"task": "classification", "target": "y"},
            files={
                "train_file": ("train.csv", TRAIN),
                "test_file": (f"test.{fmt}", file),
            },
        )
    seconds = time.perf_counter() - started
    after = memory_kb(pid)
    outcome = response.json()
    assert response.status_code == 202, outcome
    client.post(f"/jobs/{outcome['id']}/cancel", headers=headers)
    return {
        "status": response.status_code,
        "code": outcome.get("code"),
        "seconds": seconds,
        "api_cpu_s": cpu_seconds(pid) - cpu_before,
        "api_growth_mib": (after["VmHWM"] - before["VmRSS"]) / 1024,
        "peak_reset": reset,
    }


def run(sizes: list[int]) -> list[dict]:
    """One case per size and format, in order: the API's answer, growth, CPU and wall time."""
    results = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tabpfn-bench-up-") as tmp:
        scratch = Path(tmp)
        services = find_services(stack, scratch / "services")
        database_url = throwaway_database(stack, services)
        emulator_port, api_port = free_port(), free_port()
        env = stack_env(
            database_url,
            services.redis_url,
            SECRET_KEY,
            f"http://127.0.0.1:{emulator_port}",
            [SERVICE_TOKEN],
            RATE_LIMIT_PER_MINUTE="0",
            MAX_UPLOAD_BYTES=str((max(sizes) + 64) * 2**20),
            MAX_DECODED_BYTES=str(4 * 2**30),
            HOME=str(scratch),
        )
        for name, command in (
            ("emulator", ["emulator", "--port", str(emulator_port)]),
            ("api", ["api", "--port", str(api_port)]),
        ):
            process = start_in(scratch, name, command, env)
            stack.callback(process.stop, STOP_TIMEOUT_S)
            if name == "emulator":
                wait_for_http(f"http://127.0.0.1:{emulator_port}/", process, timeout=30)
            else:
                wait_for_http(f"http://127.0.0.1:{api_port}/healthz", process, timeout=60)
                api_pid = process.popen.pid
        url = f"http://127.0.0.1:{api_port}/api/v1"
        with httpx.Client(base_url=url, timeout=1800) as client:
            headers = _register(client)
            warm = scratch / "warm.csv"
            write_file(warm, "csv", 1)
            measure(client, headers, api_pid, warm, "csv")
            for size in sizes:
                for fmt in ("csv", "parquet"):
                    path = scratch / f"test-{size}.{fmt}"
                    rows = write_file(path, fmt, size)
                    case = measure(client, headers, api_pid, path, fmt)
                    case |= {"format": fmt, "mib": path.stat().st_size / 2**20, "rows": rows}
                    path.unlink()
                    print(json.dumps(case), flush=True)
                    results.append(case)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.uploads", description=__doc__)
    parser.add_argument("--sizes", default="10,100,500", help="file sizes in MiB")
    args = parser.parse_args()
    results = run([int(s) for s in args.sizes.split(",")])
    print("| file | rows | answer | API peak growth | API CPU | wall |")
    print("|---|---|---|---|---|---|")
    for case in results:
        print(
            f"| {case['format'].upper()} {case['mib']:.0f} MiB | {case['rows']:,} | "
            f"{case['status']} | +{case['api_growth_mib']:.0f} MiB | {case['api_cpu_s']:.1f} s | "
            f"{case['seconds']:.1f} s |"
        )


if __name__ == "__main__":
    main()
