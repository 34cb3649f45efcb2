"""One conformance run from claim to report, even when it is interrupted (README "Exit codes").

``conform(target, out, cfg)`` claims the report directory (``rundir.claim``: refused while
another run holds it), runs the suite with SIGINT and SIGTERM turned into ``RunInterrupted``,
and writes the reports.  The exception is raised at once in the main thread, also while a
target hangs (the worker client waits in ``select``, which a signal interrupts), so the run
stops within a second, kills its worker's process group, and reports every outcome it had
measured as an ``aborted`` run.  Later signals are ignored until the report is written
whole; SIGKILL still ends everything, and the next run clears what was left.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time

from came_conformance import report, rundir, runner


@contextlib.contextmanager
def _interrupts():
    """SIGINT/SIGTERM raise RunInterrupted once; repeats, and signals once ``fired`` is not empty, are ignored."""
    fired: list = []
    if threading.current_thread() is not threading.main_thread():
        yield fired
        return

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise rundir.RunInterrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield fired
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _nothing_measured(target: str, cfg, directory, why: str) -> dict:
    """The result of a run interrupted before its first case."""
    return {"target": target, "target_argument": target, "info": None, "settings": cfg.to_json(),
            "started": directory.started, "seconds": round(time.time() - directory.started, 2), "records": [],
            "deviation_status": {}, "declared_deviations": [], "aborted": why,
            "run": directory.run_fields(rundir.ABORTED, why)}


def conform(target: str, out, cfg, progress=print) -> tuple[dict, dict]:
    """Run ``target`` into ``out``; returns (result, verdict summary).  DirectoryBusy if ``out`` is taken."""
    directory = rundir.claim(out, target, cfg.to_json())
    try:
        with _interrupts() as fired:
            try:
                result = runner.run(target, directory, cfg, progress)
            except rundir.RunInterrupted as exc:
                result = _nothing_measured(target, cfg, directory, f"{exc.signal_name} before the first case")
            fired.append("writing")  # from here on a signal waits for the reports to be whole
            summary = report.write_all(result, directory)
    finally:
        directory.release()
    return result, summary
