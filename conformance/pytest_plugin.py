"""The suite as pytest items: ``pytest --came-target=module:factory`` (README "In a pytest CI").

Registered as a ``pytest11`` entry point of the distribution, so a vendor's existing pytest run
picks it up; without ``--came-target`` it only adds its options and does nothing else.  Each unit
of the run's plan (``runner.Plan``: tier 0, every golden vector, every error vector, each
Hypothesis property, each resume check, per execution variant) is one test item, run through
the same worker process, deviations and verdicts as ``came-conform run``:

- ``pass`` passes; ``fail``/``error`` not explained by a declared deviation fails, with the reason;
- a failure explained by a deviation is ``xfail`` (the deviation ids); ``not_applicable`` and
  ``blocked`` (tier 0 of the variant failed) skip;
- the last item, ``verdict``, applies the deviations to the whole run and fails when a declared
  deviation was not observed (only when every item ran); the reports (report.json, summary.md,
  junit.xml, records.jsonl) are written to ``--came-out`` at the end of the session.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

OPTIONS = (("--came-target", {"help": "run the CAME conformance suite against this target (module:factory or "
                                      "a built-in name)"}),
           ("--came-deviations", {"help": "deviations file of the target (else $CAME_DEVIATIONS, else built-in)"}),
           ("--came-out", {"help": "report directory (default reports/<target>)"}),
           ("--came-seed", {"type": int, "default": 0, "help": "Hypothesis seed"}),
           ("--came-examples", {"type": int, "default": None, "help": "Hypothesis trajectory examples per variant"}),
           ("--came-signatures", {"type": int, "default": None, "help": "distinct failure signatures per property"}),
           ("--came-sources", {"help": "comma-separated subset of the case sources"}),
           ("--came-variant", {"action": "append", "help": "only this execution variant (repeatable)"}),
           ("--came-timeout", {"type": float, "default": None, "help": "seconds per target request"}))


def pytest_addoption(parser):
    group = parser.getgroup("came-conformance")
    for name, kwargs in OPTIONS:
        group.addoption(name, **kwargs)


def pytest_configure(config):
    if config.getoption("came_target"):
        config.pluginmanager.register(CameRun(config), "came-conformance-run")


class CameFailure(Exception):
    """An unexplained failure of the target; its message is the records' reasons."""


class CameRun:
    """One conformance run spread over test items; started at collection, reported at the end."""

    def __init__(self, config):
        from came_conformance import runner

        self.config, self.target_name = config, config.getoption("came_target")
        defaults = runner.Settings()
        sources = config.getoption("came_sources")
        variants = config.getoption("came_variant")
        self.cfg = runner.Settings(
            seed=config.getoption("came_seed"),
            examples=config.getoption("came_examples") or defaults.examples,
            signatures=config.getoption("came_signatures") or defaults.signatures,
            timeout=config.getoption("came_timeout") or defaults.timeout,
            sources=tuple(sources.split(",")) if sources else defaults.sources,
            variants=tuple(variants) if variants else None, deviations=config.getoption("came_deviations"))
        self.out = Path(config.getoption("came_out") or f"reports/{self.target_name.replace(':', '-')}")
        self.plan = self.result = self.load_error = None
        self.ran: set[str] = set()

    def start(self):
        from came_conformance import execute, runner

        self.spec, self.declared, self.sink, self.process = runner.start(self.target_name, self.out, self.cfg)
        self.started, self.info, self.warnings = time.time(), None, []
        try:
            target = execute.Target(self.spec.name, self.process)
            self.info = target.info
            fixtures = runner.load_fixtures(self.info, self.cfg)
            self.plan = runner.Plan(target, runner.check_variants(self.info, self.cfg), fixtures, self.cfg)
            self.warnings = self.plan.warnings(fixtures)
        except execute.TargetFailure as exc:
            runner.load_failure(self.sink, exc)
            self.load_error = str(exc)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session, config, items):
        self.start()
        name = f"came[{self.spec.name}]"
        collector = CameTarget.from_parent(session, name=name, nodeid=name)
        if self.plan is None:
            items.append(CameItem.from_parent(collector, name="load", unit=None))
            return
        items += [CameItem.from_parent(collector, name=f"{u.variant}/{u.name}", unit=u) for u in self.plan.units]
        items.append(CameItem.from_parent(collector, name="verdict", unit="verdict"))

    def run_unit(self, unit):
        from came_conformance import deviations

        self.ran.add(f"{unit.variant}/{unit.name}")
        before = len(self.sink.records)
        if not self.plan.run_unit(unit, self.sink):
            pytest.skip(f"slow tier: it runs on variant {self.plan.slow_variant} (--slow-tiers first)" if unit.slow
                        and not self.plan.blocked.get(unit.variant) else
                        f"blocked: tier 0 of variant {unit.variant} failed, its numeric cases are not run")
        records = self.sink.records[before:]
        failing = [r for r in records if r["outcome"] in ("fail", "error")]
        unexplained = [r for r in failing if deviations.explain(self.sink.deviations, r) is None]
        if unexplained:
            raise CameFailure("\n".join(f"{r['id']} ({r['variant']}, {r['kind']}, {r['outcome']}): {r['reason']}"
                                        for r in unexplained))
        if records and all(r["outcome"] in ("not_applicable", "blocked") for r in records):
            pytest.skip(f"not applicable: {records[0]['reason']}")
        if failing:
            ids = sorted({i for r in failing for i in deviations.explain(self.sink.deviations, r)})
            pytest.xfail(f"expected deviation: {', '.join(ids)}")

    def finish(self):
        from came_conformance import runner

        if self.result is None:
            complete = self.plan is not None and len(self.ran) == len(self.plan.units)
            self.process.close()
            self.result = runner.finish(self.spec, self.cfg, self.declared, self.sink, self.info, self.started,
                                        self.warnings, None if complete else "the pytest session ran only some "
                                        f"of the run's {len(self.plan.units) if self.plan else 0} units")
        return self.result

    def verdict(self):
        """The baseline answer, as CI follows it: this item passes only when it MATCHES."""
        from came_conformance import verdict as verdict_mod

        v = verdict_mod.decide(self.finish())
        if v["baseline"]["answer"] != "MATCHES":
            raise CameFailure(f"baseline {v['baseline']['answer']}: {v['baseline']['text']} "
                              f"(spec {v['spec']['answer']}: {v['spec']['text']})")

    def pytest_sessionfinish(self, session):
        from came_conformance import report

        if getattr(self, "sink", None) is None:
            return
        summary = report.write_all(self.finish(), self.out)
        self.config.stash[SUMMARY] = summary

    def pytest_terminal_summary(self, terminalreporter):
        summary = self.config.stash.get(SUMMARY, None)
        if summary is not None:
            terminalreporter.write_line(f"came conformance of {self.target_name}: spec {summary['spec']['answer']} "
                                        f"({summary['spec']['text']}); baseline {summary['baseline']['answer']} "
                                        f"({summary['baseline']['text']}); reports in {self.out}/")
        for warning in (self.result or {}).get("warnings", []):
            terminalreporter.write_line(f"came conformance warning: {warning}")


SUMMARY = pytest.StashKey[dict]()


class CameTarget(pytest.Collector):
    def collect(self):
        return []


class CameItem(pytest.Item):
    def __init__(self, *, unit, **kwargs):
        super().__init__(**kwargs)
        self.unit = unit

    def runtest(self):
        run = self.config.pluginmanager.get_plugin("came-conformance-run")
        if self.unit is None:
            raise CameFailure(f"the target could not be loaded: {run.load_error}")
        if self.unit == "verdict":
            return run.verdict()
        run.run_unit(self.unit)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, CameFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.name
