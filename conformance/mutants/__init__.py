"""Mutants of CAME: deliberately broken ports the suite must catch (docs/mutation.md).

``mutant:NAME`` resolves (conformance.targets) to ``conformance.mutants:factory_<NAME with - as _>``;
this module serves those factories for every catalogue entry and control.  ``mutant:none`` and
``mutant:none-paper`` are the correct port; ``mutant:NAME--paper`` (``factory_NAME__paper``) runs a
mutant in the other profile, and ``mutant:NAME@bfloat16`` (also ``@float32``, ``@float16``) runs it with
that parameter dtype only, computing as ``conformance.mutants.adapter.PER_DTYPE`` says.
"""
from __future__ import annotations


def _by_attribute() -> dict[str, str]:
    from came_conformance.mutants.catalogue import BY_NAME

    return {name.replace("-", "_"): name for name in BY_NAME}


def adapter_for(name: str):
    """The adapter of catalogue entry ``name`` (``NAME--profile`` and ``NAME@dtype`` allowed)."""
    from came_conformance.mutants.adapter import MutantAdapter
    from came_conformance.mutants.catalogue import lookup

    name, _, computing = name.partition("@")
    mutant = lookup(name)
    return MutantAdapter(mutant.name + (f"@{computing}" if computing else ""), mutant.profile, mutant.switches,
                         computing or None)


def __getattr__(attr: str):
    if not attr.startswith("factory_"):
        raise AttributeError(attr)
    key, _, computing = attr[len("factory_"):].partition("@")  # mutant:NAME@bfloat16: the port computing so
    base, sep, profile = key.partition("__")
    names = _by_attribute()
    from came_conformance.mutants.adapter import PER_DTYPE

    if base not in names or (sep and profile not in ("paper", "mindformers")) or (computing and
                                                                                  computing not in PER_DTYPE):
        raise AttributeError(f"no mutant for {attr!r}; see conformance.mutants.catalogue")
    name = names[base] + (f"--{profile}" if sep else "") + (f"@{computing}" if computing else "")
    return lambda: adapter_for(name)
