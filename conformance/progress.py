"""A progress display for long runs: units done / total, the current variant, cases, elapsed.

On a terminal one status line is redrawn in place (at most a few times a second); anywhere else
(CI logs, pipes, files) nothing is drawn, so logs stay quiet.  The runner's messages (what each
unit announces, warnings) go through ``message``: drawn on the status line on a terminal, passed to
the caller's ``progress`` callback otherwise.
"""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, fallback=print, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label, self.total, self.fallback = label, total, fallback
        self.started, self.drawn_at, self.note, self.width = time.monotonic(), 0.0, "", 0

    def message(self, text: str) -> None:
        if self.live:
            self.note = text
        else:
            self.fallback(text)

    def update(self, done: int, variant: str, cases: int, force: bool = False) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self.drawn_at < 0.25:
            return
        self.drawn_at = now
        line = (f"[{self.label}/{variant}] {done}/{self.total} units, {cases} cases, "
                f"{now - self.started:.0f} s" + (f" · {self.note}" if self.note else ""))[:160]
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def close(self) -> None:
        if self.live and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
