"""Names that leave the runner: case ids that become file names, and reproduce lines people paste.

A case id is a content hash, as the runner makes them: a fixture's 16 hex digits, ``h-`` (a
Hypothesis draw), ``s-`` (a sharded draw, conformance.distributed) or ``v-`` (a valid boundary
value) and 16 hex digits, optionally ``@dtype`` (a fixture run at another dtype), optionally
behind ``resume-``, ``atomic-`` or ``return-`` (the records of conformance.atomic and
conformance.returns); and ``tier0``.  Nothing else
names a file.  A reproduce line is shell-quoted word by word, names the target exactly as the
run was given it (``module:factory`` included), and sets the environment the run depended on.
"""
from __future__ import annotations

import os
import re
import shlex
import sys

CASE_ID = re.compile(r"^(?:resume-|atomic-|return-)?(?:[hsv]-)?[0-9a-f]{16}(?:@(?:float64|float32|float16|bfloat16))?$|^tier0$")
#: Variables that change what a run does; a reproduce line sets those that were set.
ENVIRONMENT = ("CAME_TARGET_PYTHON", "CAME_MAX_ARRAY_SIZE", "PYTHONPATH")


def is_case_id(text) -> bool:
    return isinstance(text, str) and CASE_ID.match(text) is not None


def interpreter() -> str:
    """This interpreter, relative to the working directory when it lies inside it."""
    path = sys.executable
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def reproduce_command(target: str, variant: str, case_path: str, case_id: str, timeout: float | None = None,
                      default_timeout: float | None = None) -> str:
    """The command that replays one case into a directory of its own (the run's report stays)."""
    env = [f"{name}={shlex.quote(os.environ[name])}" for name in ENVIRONMENT if os.environ.get(name)]
    words = [interpreter(), "-m", "came_conformance", "run", "--target", target, "--variant", variant,
             "--case-file", case_path, "--out", f"reports/repro-{case_id.replace('@', '-')}"]
    if timeout is not None and timeout != default_timeout:
        words += ["--timeout", f"{timeout:g}"]
    return " ".join(env + [shlex.quote(w) for w in words])
