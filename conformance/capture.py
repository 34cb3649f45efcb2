"""Bounded capture of a worker's stdout and stderr (README "What a target can and cannot do").

A target may print without limit.  Each worker process gets a fresh ``Tail``: a ring buffer of
its last ``TAIL_BYTES`` bytes, quoted in the outcome when the worker dies, so no earlier
worker's output is ever blamed on it.  The run's ``target-stderr.log`` keeps the first
``LOG_BYTES`` bytes of everything the run's workers printed, then one note saying how much
was dropped.  Text in reports is cut by ``truncate`` with a note of what was cut.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

TAIL_BYTES = 32 << 10
LOG_BYTES = 8 << 20
QUOTED_TAIL_CHARS = 4000  # of the tail, in a record


def truncate(text: str, limit: int, keep: str = "head") -> str:
    """``text`` cut to ``limit`` characters with a note of how many were dropped."""
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    note = f" [... truncated: {dropped:,} more characters]"
    return text[:limit] + note if keep == "head" else f"[... truncated: {dropped:,} earlier characters] " + text[-limit:]


class Tail:
    """The last ``size`` bytes written, in order."""

    def __init__(self, size: int = TAIL_BYTES):
        self.size, self._data, self._lock = size, bytearray(), threading.Lock()

    def add(self, chunk: bytes) -> None:
        with self._lock:
            self._data += chunk[-self.size:]
            del self._data[:-self.size]

    def text(self, limit: int = QUOTED_TAIL_CHARS) -> str:
        with self._lock:
            data = bytes(self._data)
        return truncate(data.decode("utf-8", "replace"), limit, keep="tail")


class Log:
    """An append-only file that stops growing at ``limit`` bytes and says so once."""

    def __init__(self, path: Path | None, limit: int = LOG_BYTES):
        self.path, self.limit, self.written, self.dropped = path, limit, 0, 0
        self._lock = threading.Lock()
        self._noted = False

    def write(self, data: bytes) -> None:
        if self.path is None:
            return
        with self._lock:
            room = max(self.limit - self.written, 0)
            kept, self.dropped = data[:room], self.dropped + max(len(data) - room, 0)
            note = b""
            if len(data) > room and not self._noted:
                note, self._noted = (b"\n[target-stderr.log reached its limit of %d bytes: later output is not kept]\n"
                                     % self.limit), True
            if kept or note:
                with open(self.path, "ab") as fh:
                    fh.write(kept + note)
                self.written += len(kept)


def drain(fd: int, tail: Tail, log: Log) -> threading.Thread:
    """Read ``fd`` to its end in a daemon thread, feeding the tail and the log; closes ``fd``."""

    def run():
        try:
            while chunk := os.read(fd, 65536):
                tail.add(chunk)
                log.write(chunk)
        except OSError:
            pass
        finally:
            os.close(fd)

    thread = threading.Thread(target=run, daemon=True, name="worker-output")
    thread.start()
    return thread
