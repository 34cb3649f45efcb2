"""``python -m came_conformance new-adapter --framework {torch,mindspore,numpy} NAME``: a vendor's start.

Writes ``NAME_adapter.py`` (a working adapter on the public bases ``adapters/torch_base.py`` and
``adapters/mindspore_base.py``, or on the protocol alone for NumPy, with a comment at each rule of
README "Adapter protocol") and ``NAME_deviations.json`` (an empty deviations file with an example
entry, conformance/deviations.py) into ``--out`` (default: the current directory).  The
optimizer it wraps is ``--optimizer MODULE:CLASS``; by default the official code for torch
(``came_pytorch:CAME``) and MindSpore (``mindformers.core.optim:Came``), so the skeleton runs as
written, and ``NAME:CAME`` for NumPy.
"""
from __future__ import annotations

import re
from pathlib import Path

FRAMEWORKS = ("torch", "mindspore", "numpy")
DEFAULT_OPTIMIZER = {"torch": "came_pytorch:CAME", "mindspore": "mindformers.core.optim:Came", "numpy": "{name}:CAME"}


def add_parser(sub) -> None:
    p = sub.add_parser("new-adapter", help="write an adapter skeleton and a deviations file for a new target")
    p.add_argument("--framework", required=True, choices=FRAMEWORKS)
    p.add_argument("name", help="the target's name (a Python identifier: it names the files and the module)")
    p.add_argument("--optimizer", help="MODULE:CLASS of the optimizer to wrap (default: " + ", ".join(
        f"{k} {v}" for k, v in DEFAULT_OPTIMIZER.items()) + ")")
    p.add_argument("--out", default=".", help="directory to write into (default: the current one)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def render(framework: str, name: str, optimizer: str | None = None) -> dict[str, str]:
    """File name -> text of the skeleton and the deviations stub."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"NAME must be a Python identifier (it names the module {name}_adapter), got {name!r}")
    optimizer = optimizer or DEFAULT_OPTIMIZER[framework].format(name=name)
    module, _, cls = optimizer.partition(":")
    if not re.fullmatch(r"[A-Za-z_][\w.]*", module) or not re.fullmatch(r"[A-Za-z_]\w*", cls):
        raise ValueError(f"--optimizer must be MODULE:CLASS, got {optimizer!r}")
    fields = {"name": name, "module": f"{name}_adapter", "deviations": f"{name}_deviations.json",
              "optimizer_module": module, "optimizer_class": cls, "upper": name.upper()}
    templates = Path(__file__).with_name("templates")
    return {f"{name}_adapter.py": (templates / f"{framework}_adapter.py.txt").read_text().format(**fields),
            f"{name}_deviations.json": (templates / "deviations.json.txt").read_text().format(**fields)}


def main(args) -> int:
    out = Path(args.out)
    try:
        files = render(args.framework, args.name, args.optimizer)
    except ValueError as exc:
        raise SystemExit(f"new-adapter: {exc}") from None
    existing = [f for f in files if (out / f).exists()]
    if existing and not args.force:
        raise SystemExit(f"new-adapter: {', '.join(existing)} exist in {out}; --force overwrites")
    out.mkdir(parents=True, exist_ok=True)
    for file, text in files.items():
        (out / file).write_text(text)
        print(f"wrote {out / file}")
    print(f"next: edit {args.name}_adapter.py where it says RULE, then\n"
          f"  came-conform run --target {args.name}_adapter:factory --deviations {args.name}_deviations.json")
    return 0
