"""Where `tabpfn-api beat` keeps its schedule: BEAT_SCHEDULE_FILE, else a directory of
its own under the temp dir, removed when it stops; two beats never share a file."""

from __future__ import annotations

import uuid
from pathlib import Path

from cli.supervisor import start, stop_all, wait_for_line
from cli.throwaway import base_env


def _beat_env(services, database_url: str, temp: Path, **settings: str) -> dict[str, str]:
    return base_env(
        DATABASE_URL=database_url,
        REDIS_URL=services.redis_url,
        # Messages no worker takes, on a queue of this test's own.
        CELERY_QUEUE=f"tabpfn-api-test-beat-{uuid.uuid4().hex[:8]}",
        SWEEPER_INTERVAL_S="0.5",
        TMPDIR=str(temp),
        **settings,
    )


def test_two_beats_on_one_host_keep_schedules_of_their_own(services, database_url, tmp_path):
    temp, logs = tmp_path / "tmp", tmp_path / "logs"
    temp.mkdir()
    logs.mkdir()
    env = _beat_env(services, database_url, temp)
    beats = [start(f"beat-{n}", ["beat"], env, logs) for n in range(2)]
    try:
        for beat in beats:
            wait_for_line(beat, "Sending due task sweep")
        private = sorted(temp.iterdir())
        assert len(private) == 2, private  # nothing else in the shared temp dir
        for directory in private:
            assert directory.is_dir() and directory.name.startswith("tabpfn-api-beat-")
            assert any(f.name.startswith("schedule") for f in directory.iterdir())
    finally:
        stop_all(beats)
    assert list(temp.iterdir()) == []  # each removed its own on SIGTERM


def test_beat_keeps_its_schedule_in_beat_schedule_file(services, database_url, tmp_path):
    temp, kept, logs = tmp_path / "tmp", tmp_path / "state", tmp_path / "logs"
    for directory in (temp, kept, logs):
        directory.mkdir()
    env = _beat_env(services, database_url, temp, BEAT_SCHEDULE_FILE=str(kept / "beat-schedule"))
    beat = start("beat", ["beat"], env, logs)
    try:
        wait_for_line(beat, "Sending due task sweep")
    finally:
        stop_all([beat])
    assert any(f.name.startswith("beat-schedule") for f in kept.iterdir())  # kept after
    assert list(temp.iterdir()) == []
