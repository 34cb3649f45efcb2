"""One run per report directory, and nothing in it that another run wrote (README "Reading a report").

``claim(path, target)`` takes an exclusive lock on ``path/.lock`` (``flock``: the kernel drops
it when the holder dies, however it dies); a second run refuses with ``DirectoryBusy``, naming
the holder.  The claim then clears what earlier runs left (``STALE``: reports, records, case
files, temporary files) and gives the run a fresh run id, which every file the run writes
carries.  ``publish`` writes files to unique temporary names first and renames them into
place afterwards, ``junit.xml`` last.  ``append_record`` appends one bounded JSON line to
``records.jsonl``; ``read_records`` reads such a file back line by line, ignoring a torn last
line.  Within one process a claim is re-entrant: the latest run owns the directory until it
is released (``report.write_all`` releases a claim ``runner.run`` took).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sys
import time
from pathlib import Path

from came_conformance.capture import truncate

LOCK = ".lock"
RECORDS = "records.jsonl"
LOG = "target-stderr.log"
RUN = "run.json"
REPORTS = ("report.json", "summary.md", "junit.xml")
#: What a run leaves in its directory; all of it is removed when the next run claims it.
STALE = (*REPORTS, RECORDS, LOG, RUN)
_TEMP = re.compile(r"^\..+\.tmp-[0-9a-f]{8,}$")
FIELD_CHARS = 16000  # of any one string in a record
RECORD_BYTES = 1 << 20  # of one line of records.jsonl
RECORD_LINE_LIMIT = 4 * RECORD_BYTES  # lines longer than this are not read back
_held: dict[str, "RunDirectory"] = {}


#: How a run ended (run.json, report.json "run"): every case ran; stop_on_failure ended it at the
#: first unexplained failure; a signal ended it (RunInterrupted).
COMPLETE, STOPPED, ABORTED = "complete", "stopped", "aborted"


class DirectoryBusy(Exception):
    """Another run holds the report directory."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during a run (conformance.conform): the run stops and reports what it measured."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


def _case_file(name: str) -> bool:
    from came_conformance.names import is_case_id

    return name.endswith(".json") and is_case_id(name[:-5])


class RunDirectory:
    def __init__(self, path: Path):
        self.path, self.run_id, self._lock_fd, self.started = Path(path), None, None, None

    # ---- the claim ----
    def _lock(self, target: str) -> None:
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace")
            os.close(fd)
            try:
                h = json.loads(holder)
                who = (f"run {h.get('run_id')} of target {h.get('target')!r} (pid {h.get('pid')} on {h.get('host')}, "
                       f"since {h.get('started')})")
            except ValueError:
                who = "another run"
            raise DirectoryBusy(f"--out {self.path}: {who} is writing there; wait for it or choose another "
                                f"directory") from None
        self._lock_fd = fd

    def _begin(self, target: str, settings: dict | None) -> None:
        self.run_id, self.started = secrets.token_hex(8), time.time()
        holder = {"run_id": self.run_id, "target": target, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
                  "command": " ".join(sys.argv)[:500]}
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, json.dumps(holder).encode(), 0)
        self.clear_stale()
        (self.path / RECORDS).write_text("")
        (self.path / LOG).write_text(f"# run {self.run_id}: output of the target's worker processes\n")
        self.write_run({"status": "running", "target": target, "settings": settings})

    def clear_stale(self) -> None:
        for name in STALE:
            try:
                (self.path / name).unlink()
            except FileNotFoundError:
                pass
        for entry in os.listdir(self.path):
            if _TEMP.match(entry) and (self.path / entry).is_file():
                (self.path / entry).unlink()
        cases = self.path / "cases"
        if cases.is_dir():
            for entry in os.listdir(cases):
                if (_case_file(entry) or _TEMP.match(entry)) and (cases / entry).is_file():
                    (cases / entry).unlink()

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None
        _held.pop(str(self.path.resolve()), None)

    @property
    def claimed(self) -> bool:
        return self._lock_fd is not None

    def run_fields(self, status: str, reason: str = "") -> dict:
        """The ``run`` object of report.json: id, status and, for a run that did not finish, why."""
        return {"id": self.run_id, "status": status, **({"reason": reason} if reason else {})}

    # ---- writing ----
    def write_run(self, fields: dict) -> None:
        """run.json: the run id, target, settings and status ("running", then how it ended)."""
        path, doc = self.path / RUN, {}
        if path.exists():
            try:
                doc = json.loads(path.read_text())
            except ValueError:
                doc = {}
        if doc.get("run_id") != self.run_id:
            doc = {}
        doc.update({"run_id": self.run_id, "started": self.started, **fields})
        self.publish({RUN: json.dumps(doc, indent=1, default=str) + "\n"})

    def publish(self, files: dict[str, str]) -> None:
        """Write every file to a unique temporary name, then rename them into place in order."""
        staged = []
        try:
            for name, text in files.items():
                final = self.path / name
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = final.with_name(f".{final.name}.tmp-{secrets.token_hex(8)}")
                tmp.write_text(text, encoding="utf-8")
                staged.append((tmp, final))
            for tmp, final in staged:
                os.replace(tmp, final)
        finally:
            for tmp, _ in staged:
                if tmp.exists():
                    tmp.unlink()

    def append_record(self, record: dict, dumps) -> None:
        """One line of records.jsonl, written with one system call, carrying the run id."""
        bound_record(record)
        line = dumps({**record, "run_id": self.run_id}) + "\n"
        if len(line) > RECORD_BYTES:
            line = dumps(shrunk_record(record, len(line)) | {"run_id": self.run_id}) + "\n"
        fd = os.open(self.path / RECORDS, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)


def claim(path, target: str, settings: dict | None = None) -> RunDirectory:
    """Lock ``path`` for a new run (DirectoryBusy if another holds it), clear it and start a run id."""
    key = str(Path(path).resolve())
    directory = _held.get(key)
    if directory is None:
        directory = RunDirectory(Path(path))
        directory._lock(target)
        _held[key] = directory
    directory._begin(target, settings)
    return directory


def held(path) -> RunDirectory | None:
    """This process's claim on ``path``, if it holds one."""
    return _held.get(str(Path(path).resolve()))


def bound_record(record: dict) -> dict:
    """Cut every string of ``record`` (in place) to FIELD_CHARS characters, with a note."""

    def walk(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                obj[k] = walk(v)
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                obj[i] = walk(v)
        elif isinstance(obj, str) and len(obj) > FIELD_CHARS:
            return truncate(obj, FIELD_CHARS)
        return obj

    walk(record)
    return record


def shrunk_record(record: dict, size: int) -> dict:
    """A record too large for one line without its bulk (per-step figures, failure list, case)."""
    keep = {k: v for k, v in record.items() if k not in ("steps", "failures", "case", "traceback")}
    keep["truncated"] = f"the record had {size:,} bytes; steps, failures, case and traceback were dropped"
    return keep


def read_records(path: Path, run_id: str | None = None) -> list[dict]:
    """The records of ``records.jsonl``, line by line; a torn last line (no newline, bad JSON) is ignored.

    With ``run_id``, lines of another run are skipped.  A complete line that is not a JSON object
    raises ValueError naming its line number.
    """
    out = []
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if len(line) > RECORD_LINE_LIMIT:
                raise ValueError(f"{path}: line {number} has {len(line):,} bytes")
            complete = line.endswith(b"\n")
            try:
                record = json.loads(line)
            except ValueError:
                if not complete:
                    break  # torn by a kill mid-write
                raise ValueError(f"{path}: line {number} is not JSON") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}: line {number} is not a record")
            if run_id is None or record.get("run_id") == run_id:
                out.append(record)
    return out
