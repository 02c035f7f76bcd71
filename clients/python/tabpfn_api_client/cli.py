"""`tabpfn-api-client`: fit and predict with TabPFN from the shell, through the TabPFN API.

    tabpfn-api-client setup --token demo-token
    export TABPFN_API_KEY=tpa_...
    tabpfn-api-client fit train.csv --target species
    tabpfn-api-client predict --model MODEL test.csv -o preds.csv
    tabpfn-api-client fit-predict train.csv test.csv --target species -o preds.csv

Files are read here with pandas (.csv, or .parquet when pyarrow is installed)
and sent as JSON rows. Progress goes to stderr, results to stdout. numpy and
pandas are imported only by the commands that read or write a table: the others
start in a third of the time.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ._version import __version__
from .client import DEFAULT_API_URL, Client, Job
from .errors import APIConnectionError, JobTimeoutError, TabPFNAPIError

if TYPE_CHECKING:
    import pandas as pd

OUTPUTS = ("labels", "probabilities", "mean", "median", "quantiles")
# A table file over this size goes as it is (an upload) when the job takes it unchanged:
# as JSON rows it would meet the service's MAX_REQUEST_BYTES (50 MiB by default) sooner,
# and cost both sides more to write and read.
UPLOAD_OVER_BYTES = 16 * 2**20
# What the service reads as a table file (its name may also have no extension).
UPLOADED_SUFFIXES = ("", ".csv", ".parquet", ".pq", ".parq")
# The exit status when --timeout passed with the job still queued or running.
EXIT_STILL_RUNNING = 124
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_PREVIEW_ROWS = 10


class CLIError(Exception):
    """A mistake in the command line or its files, shown as one line."""


# -- output ----------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    text = str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line.rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def print_fields(fields: dict[str, Any], out: TextIO) -> None:
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        shown = value if isinstance(value, str) else _fmt(value)
        print(f"{key.ljust(width)}  {shown}", file=out)


def _labels(metadata: dict[str, str] | None, separator: str = " ") -> str:
    """A job's or a model's labels as `--meta` takes them (in a table cell: spaced)."""
    return separator.join(f"{key}={value}" for key, value in (metadata or {}).items())


def _when(timestamp: str) -> str:
    return timestamp[:19].replace("T", " ")


def _waiting(job: Job) -> str:
    """ " — waiting: upstream_rate_limit until 20:15:03" for a queued job that says why."""
    waiting = job.waiting if job.status == "queued" else None
    if not waiting:
        return ""
    until = waiting.get("until")
    when = f" until {until[11:19]} UTC" if isinstance(until, str) and len(until) >= 19 else ""
    return f" — waiting: {waiting['reason'].replace('_', ' ')}{when}"


class Progress:
    """Shows a job's state and stage while we wait: a spinner line on a terminal,
    one plain line per change otherwise."""

    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and stream.isatty()
        self._job: Job | None = None
        self._seen: tuple | None = None
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self.tty:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.stream.write("\r\033[K")
            if self._job is not None:
                self.stream.write(self._describe(self._job) + "\n")
            self.stream.flush()

    def _describe(self, job: Job) -> str:
        stage = f" ({job.stage})" if job.stage and not job.finished else ""
        elapsed = time.monotonic() - self._started
        return f"{job.type} job {job.id}: {job.status}{stage}{_waiting(job)}  {elapsed:.0f}s"

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(0.1):
            if self._job is not None:
                line = f"{_SPINNER[frame % len(_SPINNER)]} {self._describe(self._job)}"
                self.stream.write("\r\033[K" + line)
                self.stream.flush()
            frame += 1

    def update(self, job: Job) -> None:
        self._job = job
        if not self.enabled or self.tty:
            return
        state = (job.status, job.stage, (job.waiting or {}).get("reason"))
        if state != self._seen:
            self._seen = state
            print(self._describe(job), file=self.stream, flush=True)


# -- files -----------------------------------------------------------------


def read_table(path: str, *, columns: list[str] | None = None) -> pd.DataFrame:
    """The table in a file (`columns`: those alone, the rest of each row unread)."""
    import pandas as pd

    with _reading(path) as file:
        if _is_parquet(file):
            return pd.read_parquet(file, columns=columns)
        # round_trip: each number as written (pandas' default parser may miss by one
        # unit in the last place: 11.283999999999999 read as 11.284), as the service
        # reads the same file uploaded, so the CLI and an upload fit the same table.
        return pd.read_csv(file, float_precision="round_trip", usecols=columns)


def read_columns(path: str) -> list[str]:
    """A table file's column names, its rows unread: all an upload's checks need (a file
    of hundreds of MB, read whole, took the client's memory before it was sent as it is)."""
    with _reading(path) as file:
        if _is_parquet(file):
            import pyarrow.parquet as pq

            schema = pq.read_schema(file)
            index = (schema.pandas_metadata or {}).get("index_columns", [])  # pandas' index
            return [name for name in schema.names if name not in index]
        import pandas as pd

        return [str(name) for name in pd.read_csv(file, nrows=0).columns]


def _is_parquet(file: Path) -> bool:
    return file.suffix.lower() in (".parquet", ".pq")


@contextmanager
def _reading(path: str) -> Iterator[Path]:
    """The file at `path`, its reading errors as one CLIError line."""
    file = Path(path)
    if not file.is_file():
        raise CLIError(f"{path}: no such file.")
    try:
        yield file
    except ImportError as exc:
        raise CLIError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow).") from exc
    except (ValueError, OSError) as exc:
        raise CLIError(f"{path}: cannot read it as a table: {exc}") from exc


def split_target(frame: pd.DataFrame, target: str, path: str) -> tuple[pd.DataFrame, pd.Series]:
    check_target(list(frame.columns), target, path)
    return frame.drop(columns=[target]), frame[target]


def check_target(columns: list[str], target: str, path: str) -> None:
    if target not in columns:
        raise CLIError(f"{path} has no column {target!r}; columns: {columns}.")


def infer_task(y: pd.Series) -> str:
    """Text, booleans and a few whole numbers are classes; other numbers are a regression."""
    import numpy as np

    if y.dtype.kind not in "iuf":
        return "classification"
    values = y.dropna().to_numpy(dtype=float)
    whole = bool(np.all(np.equal(np.mod(values, 1), 0)))
    return "classification" if whole and len(np.unique(values)) <= 10 else "regression"


def _split_pairs(pairs: Sequence[str] | None, flag: str, form: str, example: str) -> dict[str, str]:
    """Repeated `--flag NAME=VALUE` arguments, by name; a usage error for any other form."""
    split: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise CLIError(f"{flag} {pair!r}: use {form}, e.g. {flag} {example}.")
        split[name] = text
    return split


def parse_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, text in _split_pairs(pairs, "--option", "NAME=VALUE", "n_estimators=4").items():
        try:
            options[name] = json.loads(text)
        except ValueError:
            options[name] = text
    return options


def parse_metadata(pairs: Sequence[str] | None) -> dict[str, str] | None:
    """--meta KEY=VALUE pairs (repeated) as a job's metadata; the value stays text."""
    return _split_pairs(pairs, "--meta", "KEY=VALUE", "order=A-17") or None


def parse_quantiles(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(q) for q in text.split(",") if q.strip()]
    except ValueError as exc:
        raise CLIError(f"--quantiles {text!r}: use numbers like 0.1,0.5,0.9.") from exc


def _same_label(predicted: Any, truth: Any) -> bool:
    """Whether a predicted class is the test file's label.

    A number is compared as a number: pandas reads a column of whole numbers with
    a blank cell as floats, and 1 is the label 1.0 (as text, "1" != "1.0", and
    every row of such a file was scored wrong). Text is compared as text.
    """
    if isinstance(predicted, int | float) and not isinstance(predicted, bool):
        try:
            return float(predicted) == float(truth)
        except (TypeError, ValueError):
            return False
    return str(predicted) == str(truth)


def predictions_frame(result: dict[str, Any]) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"prediction": result["predictions"]})
    if result.get("probabilities") is not None:
        probabilities = np.asarray(result["probabilities"], dtype=float)
        for j, cls in enumerate(result.get("classes") or []):
            frame[f"proba_{cls}"] = probabilities[:, j]
    # In the quantiles' order: the service stores results as JSONB, which orders an
    # object's keys by length first ("0.1", "0.9", then "0.05").
    quantiles = result.get("quantiles") or {}
    for q in sorted(quantiles, key=float):
        frame[f"q{q}"] = quantiles[q]
    return frame


# -- commands ---------------------------------------------------------------


class App:
    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.client = Client(
            getattr(args, "api_url", None) or os.environ.get("API_URL") or DEFAULT_API_URL,
            getattr(args, "api_key", None) or os.environ.get("TABPFN_API_KEY"),
            timeout=args.request_timeout,
            # A person is waiting: a service that is not there is said at once
            # (one quick retry rides out a restart), not after seconds of backoff.
            max_retries=1,
        )

    def note(self, message: str) -> None:
        if not self.args.quiet:
            print(message, file=self.err)

    def note_inferred(self, task: str) -> None:
        if not self.args.task:
            self.note(f"task: {task} (inferred from {self.args.target!r}; choose with --task)")

    def emit_json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, default=str), file=self.out)

    def require_key(self) -> None:
        if not self.client.api_key:
            raise CLIError(
                "No API key: pass --api-key or set TABPFN_API_KEY "
                "(run `tabpfn-api-client setup` to get one)."
            )

    def wait(self, job: Job) -> Job:
        if self.args.no_wait:
            return job
        progress = Progress(self.err, enabled=not self.args.quiet)
        with progress:
            job.wait(self.args.timeout, on_update=progress.update)
        return job

    def show_predictions(self, result: dict[str, Any], out_path: str | None, y_true=None) -> None:
        frame = predictions_frame(result)
        if out_path:
            frame.to_csv(out_path, index=False)
            self.note(f"wrote {len(frame)} predictions to {out_path}")
        if self.args.json:
            self.emit_json(result)
            return
        if out_path:  # the file has them all; only the score is left to show
            if y_true is not None:
                self.show_score(result, y_true)
            return
        shown = frame.head(_PREVIEW_ROWS)
        rows = [[i, *row] for i, row in enumerate(shown.values.tolist())]
        print_table(["row", *shown.columns], rows, self.out)
        if len(frame) > len(shown):
            more = "" if out_path else "; write them all with -o FILE"
            print(f"... {len(frame)} rows{more}", file=self.out)
        if y_true is not None:
            self.show_score(result, y_true)

    def show_score(self, result: dict[str, Any], y_true: pd.Series) -> None:
        """Accuracy or RMSE over the test rows that have a target (a blank one is skipped)."""
        import numpy as np

        known = y_true.notna().to_numpy()
        predicted = [p for p, k in zip(result["predictions"], known, strict=True) if k]
        truth = y_true[known].tolist()
        if not truth:
            print("no score: the test file's target column is empty", file=self.out)
            return
        blank = len(y_true) - len(truth)
        skipped = f"; {blank} {'row' if blank == 1 else 'rows'} without a target" if blank else ""
        if "classes" in result:
            correct = sum(_same_label(p, t) for p, t in zip(predicted, truth, strict=True))
            print(
                f"accuracy: {correct / len(truth):.3f} ({correct}/{len(truth)}{skipped})",
                file=self.out,
            )
        else:
            error = np.asarray(predicted, dtype=float) - np.asarray(truth, dtype=float)
            print(f"rmse: {math.sqrt(float(np.mean(error**2))):.4g}{skipped}", file=self.out)

    def submitted(self, job: Job) -> bool:
        """Report a job submitted with --no-wait; True when there is nothing more to do."""
        if not self.args.no_wait:
            return False
        if self.args.json:
            self.emit_json(job.data)
        else:
            print(job.id, file=self.out)
        self.note(f"submitted {job.type} job {job.id}; follow it: tabpfn-api-client wait {job.id}")
        return True

    # each command

    def tabpfn_token(self) -> str:
        token = self.args.token or os.environ.get("TABPFN_TOKEN")
        if not token and sys.stdin.isatty():
            token = getpass.getpass("TabPFN token: ")
        if not token:
            raise CLIError("No TabPFN token: pass --token or set TABPFN_TOKEN.")
        return token

    def cmd_token(self) -> int:
        self.require_key()
        self.client.replace_token(self.tabpfn_token())
        self.note("TabPFN token replaced: jobs that run from now on use it.")
        return 0

    def cmd_delete_account(self) -> int:
        self.require_key()
        if not self.args.yes:
            raise CLIError(
                "This deletes your account for good: its API keys, stored TabPFN token, "
                "jobs, results and models. Pass --yes to go ahead."
            )
        self.client.delete_account()
        self.note("Account deleted. Unset TABPFN_API_KEY: the key no longer works.")
        return 0

    def cmd_setup(self) -> int:
        account = self.client.setup(self.tabpfn_token())
        if self.args.json:
            self.emit_json(account)
            return 0
        print_fields(account, self.out)
        print(
            "\nKeep the api_key and webhook_secret: they are shown only once.\n"
            f"export TABPFN_API_KEY={account['api_key']}",
            file=self.out,
        )
        return 0

    def uploads(self, *paths: str, unchanged: str | None) -> bool:
        """Whether the job's files go as they are (an upload) rather than as JSON rows:
        with --upload, or when one is over UPLOAD_OVER_BYTES; only files the job takes as
        they are (`unchanged`: None, or why not)."""
        foreign = [p for p in paths if Path(p).suffix.lower() not in UPLOADED_SUFFIXES]
        if unchanged is None and foreign:  # e.g. train.csv.gz, which pandas reads here
            unchanged = f"the service takes .csv and .parquet files, not {foreign[0]}"
        if self.args.upload and unchanged is not None:
            raise CLIError(f"--upload sends the files as they are, but {unchanged}.")
        sizes = [Path(path).stat().st_size for path in paths]
        if self.args.upload or (max(sizes) > UPLOAD_OVER_BYTES and unchanged is None):
            self.note(f"uploading {', '.join(paths)} as they are ({sum(sizes) / 2**20:.1f} MiB)")
            return True
        return False

    def cmd_fit(self) -> int:
        self.require_key()
        path, target = self.args.train, self.args.target
        hooks = {
            "options": parse_options(self.args.option),
            "callback_url": self.args.callback_url,
            "metadata": parse_metadata(self.args.meta),
        }
        if self.uploads(path, unchanged=None):
            # Sent as it is: its header, and its target column to tell the task, alone.
            check_target(read_columns(path), target, path)
            task = self.args.task or infer_task(read_table(path, columns=[target])[target])
            job = self.client.fit_file(path, target=target, task=task, **hooks)
        else:
            X, y = split_target(read_table(path), target, path)
            task = self.args.task or infer_task(y)
            job = self.client.fit(X, y, task=task, **hooks)
        self.note_inferred(task)  # once accepted: not before a refusal
        if self.submitted(job):
            return 0
        result = self.wait(job).result()
        if self.args.json:
            self.emit_json(result)
            return 0
        print_fields(
            {
                "model_id": result["model_id"],
                "task": result["task"],
                "rows": result["n_rows"],
                "features": result["n_features"],
                **({"classes": result["classes"]} if result.get("classes") else {}),
            },
            self.out,
        )
        return 0

    def cmd_predict(self) -> int:
        self.require_key()
        columns = read_columns(self.args.test)  # the rows only if sent as JSON rows
        model = self.client.get_model(self.args.model)
        extra = [c for c in columns if c not in model["columns"]]
        missing = [c for c in model["columns"] if c not in columns]
        unchanged = None
        if extra or missing:
            unchanged = f"{self.args.test} does not hold exactly the model's columns"
        hooks = {
            "output": self.args.output,
            "quantiles": parse_quantiles(self.args.quantiles),
            "callback_url": self.args.callback_url,
            "metadata": parse_metadata(self.args.meta),
        }
        if self.uploads(self.args.test, unchanged=unchanged):
            job = self.client.predict_file(self.args.model, self.args.test, **hooks)
        else:
            X = read_table(self.args.test)
            if extra and not missing:
                self.note(f"ignoring columns the model was not fitted on: {extra}")
                X = X[model["columns"]]
            job = self.client.predict(self.args.model, X, **hooks)
        if self.submitted(job):
            return 0
        self.show_predictions(self.wait(job).result(), self.args.out)
        return 0

    def cmd_fit_predict(self) -> int:
        self.require_key()
        train, test_path, target = self.args.train, self.args.test, self.args.target
        check_target(read_columns(train), target, train)
        scored = target in read_columns(test_path)  # the rows only if sent as JSON rows
        hooks = {
            "options": parse_options(self.args.option),
            "output": self.args.output,
            "quantiles": parse_quantiles(self.args.quantiles),
            "callback_url": self.args.callback_url,
            "metadata": parse_metadata(self.args.meta),
        }
        unchanged = None
        y_test = None
        if scored:
            unchanged = f"{test_path} holds the target column {target!r}"
        if self.uploads(train, test_path, unchanged=unchanged):
            task = self.args.task or infer_task(read_table(train, columns=[target])[target])
            job = self.client.fit_predict_files(train, test_path, target=target, task=task, **hooks)
        else:
            X, y = split_target(read_table(train), target, train)
            test = read_table(test_path)
            if scored:
                test, y_test = split_target(test, target, test_path)
            task = self.args.task or infer_task(y)
            job = self.client.fit_predict(X, y, test, task=task, **hooks)
        self.note_inferred(task)
        if self.submitted(job):
            return 0
        self.show_predictions(self.wait(job).result(), self.args.out, y_test)
        return 0

    def cmd_wait(self) -> int:
        self.require_key()
        job = self.wait(self.client.get_job(self.args.job))
        if job.type == "fit":
            result = job.result()
            if self.args.json:
                self.emit_json(result)
            else:
                print_fields({"model_id": result["model_id"], "task": result["task"]}, self.out)
        else:
            self.show_predictions(job.result(), self.args.out)
        return 0

    def cmd_jobs(self) -> int:
        self.require_key()
        jobs = self.client.list_jobs(
            limit=self.args.limit,
            status=self.args.status,
            type=self.args.type,
            metadata=parse_metadata(self.args.meta),
        )
        if self.args.json:
            self.emit_json([j.data for j in jobs])
            return 0
        rows = [
            [
                j.id,
                j.type,
                j.status,
                j.stage,
                _when(j.data["created_at"]),
                (j.error or {}).get("code"),
                _labels(j.metadata),
            ]
            for j in jobs
        ]
        headers = ["id", "type", "status", "stage", "created", "error", "metadata"]
        print_table(headers, rows, self.out)
        return 0

    def cmd_cancel(self) -> int:
        self.require_key()
        job = self.client.cancel_job(self.args.job)
        print(f"{job.type} job {job.id}: {job.status}", file=self.out)
        return 0

    def cmd_label(self) -> int:
        self.require_key()
        setting = parse_metadata(self.args.meta) or {}
        both = sorted(set(setting) & set(self.args.unset or []))
        if both:
            raise CLIError(f"--meta and --unset both name {', '.join(both)}: give one of them.")
        changes: dict[str, str | None] | None = {**dict.fromkeys(self.args.unset or []), **setting}
        if self.args.clear:
            if changes:
                raise CLIError("--clear removes every label: give it without --meta or --unset.")
            changes = None
        elif not changes:
            raise CLIError("Nothing to change: give --meta KEY=VALUE, --unset KEY or --clear.")
        if self.args.model:
            data = self.client.update_model(self.args.id, metadata=changes)
            what = f"model {data['id']}"
        else:
            job = self.client.update_job(self.args.id, metadata=changes)
            data, what = job.data, f"{job.type} job {job.id}"
        if self.args.json:
            self.emit_json(data)
            return 0
        print(f"{what}: {_labels(data.get('metadata'), ', ') or '(none)'}", file=self.out)
        return 0

    def cmd_delete_job(self) -> int:
        self.require_key()
        self.client.delete_job(self.args.job)
        print(f"job {self.args.job}: deleted", file=self.out)
        return 0

    def cmd_keys(self) -> int:
        self.require_key()
        return self.show_list(
            self.client.list_keys(),
            ["id", "name", "state", "created", "last used"],
            lambda k: [
                k["id"],
                k["name"] or "",
                "revoked" if k["revoked_at"] else "active",
                _when(k["created_at"]),
                _when(k["last_used_at"]) if k["last_used_at"] else "",
            ],
        )

    def cmd_new_key(self) -> int:
        self.require_key()
        key = self.client.create_key(self.args.name)
        if self.args.json:
            self.emit_json(key)
            return 0
        print_fields(key, self.out)
        print("\nKeep the api_key: it is shown only once.", file=self.out)
        return 0

    def cmd_revoke_key(self) -> int:
        self.require_key()
        self.client.revoke_key(self.args.key_id)
        self.note(f"API key {self.args.key_id} revoked.")
        return 0

    def cmd_models(self) -> int:
        self.require_key()
        return self.show_list(
            self.client.list_models(metadata=parse_metadata(self.args.meta)),
            ["id", "task", "rows", "features", "created", "metadata"],
            lambda m: [
                m["id"],
                m["task"],
                m["n_rows"],
                m["n_features"],
                _when(m["created_at"]),
                _labels(m.get("metadata")),
            ],
        )

    def show_list(
        self, items: list[dict[str, Any]], headers: list[str], row: Callable[[dict], list]
    ) -> int:
        """A list as JSON (--json) or as a table of one row per item."""
        if self.args.json:
            self.emit_json(items)
        else:
            print_table(headers, [row(item) for item in items], self.out)
        return 0

    def cmd_usage(self) -> int:
        self.require_key()
        usage = self.client.usage()
        if self.args.json:
            self.emit_json(usage)
            return 0
        windows = usage.pop("rate_windows", None)
        print_fields(usage, self.out)
        if windows:  # this service's pacing of your token: a row per kind of call and window
            print(file=self.out)
            rows = [
                [w["kind"], w["window"], f"{w['used']} / {w['limit']}", _when(w["resets_at"])]
                for w in windows
            ]
            print_table(["calls", "window", "used", "resets (UTC)"], rows, self.out)
        return 0


EXAMPLES = {
    "main": f"""examples:
  tabpfn-api-client setup --token demo-token          # prints an API key
  export TABPFN_API_KEY=tpa_...
  tabpfn-api-client fit iris.csv --target species      # prints the model id
  tabpfn-api-client predict --model MODEL flowers.csv -o predictions.csv
  tabpfn-api-client COMMAND --help                     # each command's options

The service is at $API_URL (default {DEFAULT_API_URL}); `tabpfn-api dev` runs one locally.""",
    "setup": """examples:
  tabpfn-api-client setup --token demo-token
  TABPFN_TOKEN=... tabpfn-api-client --json setup
Setting up again with the same token gives a new key for the same account.
A new token for the same account: `tabpfn-api-client token` (setup would
make a new, empty account).""",
    "token": """examples:
  tabpfn-api-client token --token NEW_TOKEN
TabPFN verifies it first; your API keys, models and jobs stay.""",
    "fit": """examples:
  tabpfn-api-client fit iris.csv --target species
  tabpfn-api-client fit houses.parquet --target price --task regression --option n_estimators=4
  tabpfn-api-client fit big.csv --target y --no-wait        # prints the job id
  tabpfn-api-client fit iris.csv --target species --meta run=2026-12-06 --no-wait""",
    "predict": """examples:
  tabpfn-api-client predict --model MODEL flowers.csv
  tabpfn-api-client predict --model MODEL flowers.csv --output probabilities -o proba.csv
  tabpfn-api-client predict --model MODEL houses.csv --output quantiles --quantiles 0.1,0.9""",
    "fit-predict": """examples:
  tabpfn-api-client fit-predict train.csv test.csv --target species
  tabpfn-api-client fit-predict train.csv test.csv --target price -o predictions.csv""",
    "wait": """examples:
  tabpfn-api-client wait JOB_ID
  tabpfn-api-client wait JOB_ID -o predictions.csv --timeout 600""",
    "jobs": """examples:
  tabpfn-api-client jobs --status failed --limit 5
  tabpfn-api-client jobs --meta run=2026-12-06          # the jobs labelled so""",
    "label": """examples:
  tabpfn-api-client label JOB_ID --meta status=shipped --unset draft
  tabpfn-api-client label JOB_ID --clear                # remove every label
  tabpfn-api-client label --model MODEL_ID --meta name=churn
  tabpfn-api-client models --meta name=churn            # find it again""",
}


def build_parser() -> argparse.ArgumentParser:
    # Connection flags are accepted before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api-url", default=argparse.SUPPRESS, help=f"service URL (env API_URL; {DEFAULT_API_URL})"
    )
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="API key (env TABPFN_API_KEY)")
    # So are these: `fit train.csv --target y --json` reads as naturally as the other order.
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print results as JSON"
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress or notes"
    )
    common.add_argument(
        "--request-timeout",
        type=float,
        default=argparse.SUPPRESS,
        help="seconds per HTTP request (30)",
    )

    parser = argparse.ArgumentParser(
        prog="tabpfn-api-client",
        description="Fit and predict with TabPFN through the TabPFN API.",
        epilog=EXAMPLES["main"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *, waits: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXAMPLES.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )
        if waits:
            sub.add_argument(
                "--timeout", type=float, default=None, help="give up waiting after S seconds"
            )
        return sub

    def job_flags(sub: argparse.ArgumentParser, *, fit: bool, predict: bool) -> None:
        if fit:
            sub.add_argument("--target", required=True, help="the column to learn")
            sub.add_argument("--task", choices=("classification", "regression"))
            sub.add_argument(
                "--option", action="append", metavar="NAME=VALUE", help="a TabPFN option (repeat)"
            )
        if predict:
            sub.add_argument(
                "--output",
                choices=OUTPUTS,
                help="labels (default) or probabilities; "
                "mean (default), median or quantiles for regression",
            )
            sub.add_argument("--quantiles", metavar="Q,Q,...", help="e.g. 0.1,0.5,0.9")
            sub.add_argument("-o", "--out", metavar="FILE", help="write predictions as CSV")
        sub.add_argument("--callback-url", help="POST a signed event here when the job ends")
        sub.add_argument(
            "--meta",
            action="append",
            metavar="KEY=VALUE",
            help="your label for the job, e.g. order=A-17 (repeat; `jobs --meta` finds it)",
        )
        sub.add_argument("--no-wait", action="store_true", help="print the job id and return")
        sub.add_argument(
            "--upload",
            action="store_true",
            help="send the files as they are (streamed; up to the service's upload limit, "
            f"500 MB by default) instead of as JSON rows; files over "
            f"{UPLOAD_OVER_BYTES // 2**20} MiB go so when the job takes them unchanged",
        )

    sub = command("setup", "register a TabPFN token and get an API key")
    sub.add_argument("--token", help="your TabPFN token (env TABPFN_TOKEN; asked if a terminal)")
    sub.set_defaults(run=App.cmd_setup)

    sub = command(
        "token",
        "replace the TabPFN token your account's jobs run with (keeps the account)",
    )
    sub.add_argument("--token", help="the new TabPFN token (env TABPFN_TOKEN; asked if a terminal)")
    sub.set_defaults(run=App.cmd_token)

    sub = command(
        "delete-account",
        "delete your account and everything the service holds for it (not undoable)",
    )
    sub.add_argument("--yes", action="store_true", help="confirm: delete it, now")
    sub.set_defaults(run=App.cmd_delete_account)

    sub = command("fit", "fit a model on a CSV or Parquet file", waits=True)
    sub.add_argument("train", help="training data with the target column")
    job_flags(sub, fit=True, predict=False)
    sub.set_defaults(run=App.cmd_fit)

    sub = command("predict", "predict a file with a fitted model", waits=True)
    sub.add_argument("test", help="rows to predict (the model's columns, by name)")
    sub.add_argument("--model", required=True, help="model id from `fit`")
    job_flags(sub, fit=False, predict=True)
    sub.set_defaults(run=App.cmd_predict)

    sub = command("fit-predict", "fit on one file and predict another, in one job", waits=True)
    sub.add_argument("train")
    sub.add_argument("test", help="rows to predict; a target column there is scored")
    job_flags(sub, fit=True, predict=True)
    sub.set_defaults(run=App.cmd_fit_predict)

    sub = command("wait", "wait for a job and show its result", waits=True)
    sub.add_argument("job")
    sub.add_argument("-o", "--out", metavar="FILE", help="write predictions as CSV")
    sub.set_defaults(run=App.cmd_wait, no_wait=False)

    sub = command("jobs", "list your recent jobs")
    sub.add_argument("--limit", type=int, default=20)
    sub.add_argument("--status", choices=("queued", "running", "succeeded", "failed", "canceled"))
    sub.add_argument("--type", choices=("fit", "predict", "fit_predict"))
    sub.add_argument(
        "--meta", action="append", metavar="KEY=VALUE", help="only jobs with this label (repeat)"
    )
    sub.set_defaults(run=App.cmd_jobs)

    sub = command("cancel", "cancel a job")
    sub.add_argument("job")
    sub.set_defaults(run=App.cmd_cancel)

    sub = command("label", "change the labels (metadata) of a job, or of a model with --model")
    sub.add_argument("id", metavar="JOB", help="the job's id (a model's with --model)")
    sub.add_argument("--model", action="store_true", help="the id is a fitted model's")
    sub.add_argument("--meta", action="append", metavar="KEY=VALUE", help="set this label (repeat)")
    sub.add_argument("--unset", action="append", metavar="KEY", help="remove this label (repeat)")
    sub.add_argument("--clear", action="store_true", help="remove every label")
    sub.set_defaults(run=App.cmd_label)

    sub = command("delete-job", "delete a finished job and its data now (its model stays)")
    sub.add_argument("job")
    sub.set_defaults(run=App.cmd_delete_job)

    sub = command("models", "list your fitted models")
    sub.add_argument(
        "--meta", action="append", metavar="KEY=VALUE", help="only models with this label (repeat)"
    )
    sub.set_defaults(run=App.cmd_models)
    command("keys", "list your API keys (ids and names, never the keys)").set_defaults(
        run=App.cmd_keys
    )
    sub = command("new-key", "make another API key for your account (shown once)")
    sub.add_argument("--name", help="a label for it, e.g. the pipeline that will use it")
    sub.set_defaults(run=App.cmd_new_key)
    sub = command("revoke-key", "revoke one of your API keys, at once")
    sub.add_argument("key_id", help="the key's id, from `keys`")
    sub.set_defaults(run=App.cmd_revoke_key)
    command("usage", "your TabPFN account's usage").set_defaults(run=App.cmd_usage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Flags given nowhere. Not parser defaults: set_defaults on a parser changes the
    # actions it shares with the commands, whose default would then undo the flag.
    unset = {"no_wait": False, "timeout": None, "json": False, "quiet": False}
    for name, value in {**unset, "request_timeout": 30.0}.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    app = None
    try:
        app = App(args, sys.stdout, sys.stderr)  # a bad service URL is refused here
        return args.run(app)
    except JobTimeoutError as exc:
        # Not a failure: the job goes on. The status timeout(1) uses, so a script can
        # tell "still running" from "failed".
        job = exc.body.get("job_id", "")
        print(
            f"error: {exc.detail} It goes on: `tabpfn-api-client wait {job}` waits again.",
            file=sys.stderr,
        )
        return EXIT_STILL_RUNNING
    except APIConnectionError as exc:
        hint = ""
        if not exc.reached:  # nothing answers there at all
            hint = (
                " Is the service running? Start one on this machine with `tabpfn-api dev` "
                "(see the README), or name yours with --api-url or API_URL."
            )
        print(f"error: {exc.detail}.{hint}", file=sys.stderr)
        return 1
    except TabPFNAPIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (jobs keep running; see `tabpfn-api-client jobs`)", file=sys.stderr)
        return 130
    finally:
        if app is not None:
            app.client.close()


if __name__ == "__main__":
    sys.exit(main())
