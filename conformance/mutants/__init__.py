"""Mutants of CAME: deliberately broken ports the suite must catch (docs/mutation.md).

``mutant:NAME`` resolves (conformance.targets) to ``conformance.mutants:factory_<NAME with - as _>``;
this module serves those factories for every catalogue entry and control.  ``mutant:none`` and
``mutant:none-paper`` are the correct port; ``mutant:NAME--paper`` (``factory_NAME__paper``) runs a
mutant in the other profile.
"""
from __future__ import annotations


def _by_attribute() -> dict[str, str]:
    from came_conformance.mutants.catalogue import BY_NAME

    return {name.replace("-", "_"): name for name in BY_NAME}


def adapter_for(name: str):
    """The adapter of catalogue entry ``name`` (``NAME--profile`` allowed)."""
    from came_conformance.mutants.adapter import MutantAdapter
    from came_conformance.mutants.catalogue import lookup

    mutant = lookup(name)
    return MutantAdapter(mutant.name, mutant.profile, mutant.switches)


def __getattr__(attr: str):
    if not attr.startswith("factory_"):
        raise AttributeError(attr)
    key = attr[len("factory_"):]
    base, sep, profile = key.partition("__")
    names = _by_attribute()
    if base not in names or (sep and profile not in ("paper", "mindformers")):
        raise AttributeError(f"no mutant for {attr!r}; see conformance.mutants.catalogue")
    name = names[base] + (f"--{profile}" if sep else "")
    return lambda: adapter_for(name)
