"""Long fuzzing run of every reader of user and board files (images, galleries, manifests, spec files, TFLite
files through the graph reader and the interpreter shim, board inventories, board event logs, dlib's .dat).

    python tests/benchmarks/fuzz_readers.py [--target NAME|all] [--minutes M | --examples N] [--seed S]
                                            [--findings DIR]

The same targets, seeds and strategies as the short run in ``tests/test_fuzz.py`` (``tests/fuzz_harness.py``:
real files from the package and the shared data, mutated; random and retyped JSON/TOML documents), run for
longer and without stopping at the first finding.  Each case is read in a worker process, so a crash (signal),
a hang or a memory blow-up is a finding like any exception other than the reader's UserError.

A new finding (kind, exception type, place in the code) is shrunk by Hypothesis to a minimal input, saved under
``--findings DIR/<target>/<n>-<type>/`` (the files as the reader saw them, ``case.txt`` with the seed and the
mutation ops, ``result.json``), and the run goes on looking for others.  Prints per target: executions (shrinking
included), executions/s, worker restarts and the findings; exits 1 when anything was found.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fuzz_harness as fh  # noqa: E402

CHUNK_MAX = 500  # examples per Hypothesis run: between runs the clock is checked and a new seed drawn


class _Found(Exception):
    """Raised in the property for the finding being shrunk."""


@dataclass
class Campaign:
    """What one target's run found."""

    target: str
    executions: int = 0
    seconds: float = 0.0
    duplicates: int = 0  # cases that hit an already-known finding
    outcomes: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)  # (Result, Case, shrunk)


def _short(case: fh.Case, limit: int = 400) -> str:
    text = repr(case)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters, whole in case.txt)"


def _save(folder: Path, target: fh.Target, result: fh.Result, case: fh.Case, seeds: dict, n: int,
          shrunk: bool) -> Path:
    out = folder / target.name / f"{n:02d}-{result.kind.replace(' ', '-')}-{result.type.rsplit('.', 1)[-1]}"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in fh.case_files(target, case, seeds).items():
        (out / name).write_bytes(data)
    (out / "case.txt").write_text(repr(case) + "\n")
    (out / "result.json").write_text(json.dumps({**asdict(result), "shrunk": shrunk}, indent=2) + "\n")
    return out


def fuzz_target(target: fh.Target, seeds: dict, runner: fh.Runner, seconds: Optional[float],
                examples: Optional[int], seed: int, findings_dir: Path) -> Campaign:
    """Run ``target`` until the time or example budget is spent; returns the campaign's figures."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    camp = Campaign(target.name)
    strategy = fh.case_strategy(target, seeds)
    rng = random.Random(f"{seed}-{target.name}")
    known: dict[tuple, fh.Result] = {}
    pending: dict[tuple, tuple[fh.Result, fh.Case]] = {}  # new findings seen while shrinking another
    start = time.perf_counter()
    generated = 0

    def left() -> bool:
        if examples is not None:
            return generated < examples
        return time.perf_counter() - start < (seconds or 0)

    state: dict = {}
    counted = {"n": 0}

    def prop(case: fh.Case) -> None:
        camp.executions += 1
        if state["current"] is None:
            counted["n"] += 1  # generation; after the first new finding Hypothesis is shrinking it
        result = runner.run(target, case)
        camp.outcomes[result.outcome] = camp.outcomes.get(result.outcome, 0) + 1
        if result.outcome != "finding":
            return
        sig = result.signature
        if state["current"] is None and sig not in known:
            state["current"] = sig
        if sig == state["current"]:  # only the finding being shrunk fails: shrinking keeps its signature
            state["case"], state["result"] = case, result
            raise _Found(result.describe())
        if sig in known:
            camp.duplicates += 1
        elif sig not in pending:
            pending[sig] = (result, case)

    while left():
        state.update(current=None, case=None, result=None)
        counted["n"] = 0
        budget = CHUNK_MAX if examples is None else min(CHUNK_MAX, examples - generated)
        test = settings(max_examples=budget, deadline=None, database=None, derandomize=False,
                        suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
                        phases=(Phase.generate, Phase.shrink))(given(strategy)(prop))
        test = hseed(rng.getrandbits(64))(test)
        try:
            test()
        except Exception as exc:  # _Found; or Hypothesis' flaky-failure error when the replay passed (a hang)
            if state["result"] is None:
                raise
            result, case = state["result"], state["case"]
            shrunk = isinstance(exc, _Found)
            known[result.signature] = result
            pending.pop(result.signature, None)
            path = _save(findings_dir, target, result, case, seeds, len(camp.findings) + 1, shrunk=shrunk)
            camp.findings.append((result, case, path))
            print(f"  [{target.name}] finding{'' if shrunk else ' (replay did not repeat it)'}: "
                  f"{result.describe()}\n    minimal input: {_short(case)}\n    saved in {path}", flush=True)
        generated += counted["n"]
    for sig, (result, case) in pending.items():  # seen but never shrunk: saved as they came
        if sig not in known:
            known[sig] = result
            path = _save(findings_dir, target, result, case, seeds, len(camp.findings) + 1, shrunk=False)
            camp.findings.append((result, case, path))
            print(f"  [{target.name}] finding (not shrunk): {result.describe()}\n    saved in {path}", flush=True)
    camp.seconds = time.perf_counter() - start
    return camp


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="all", help=f"one of {', '.join(fh.TARGETS)}, or all (default)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="minutes per target (default 2)")
    budget.add_argument("--examples", type=int, help="generated examples per target (shrinking not counted)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (default 0): the same seed and budget "
                        "in examples repeat the same cases")
    parser.add_argument("--findings", type=Path, default=Path("fuzz-findings"),
                        help="folder for the minimal inputs of findings (default ./fuzz-findings)")
    args = parser.parse_args(argv)
    if args.target != "all" and args.target not in fh.TARGETS:
        parser.error(f"unknown --target {args.target!r}: choose one of {', '.join(fh.TARGETS)} or all")
    names = list(fh.TARGETS) if args.target == "all" else [args.target]
    seconds = None if args.examples is not None else 60.0 * (args.minutes if args.minutes is not None else 2.0)

    seed_dir = Path(tempfile.mkdtemp(prefix="edgeface-fuzz-seeds-"))
    fh.build_seeds(seed_dir)
    seeds = fh.load_seeds(seed_dir)
    runner = fh.Runner(seed_dir)
    camps = []
    try:
        for name in names:
            target = fh.TARGETS[name]
            if target.seed_dir not in seeds:
                print(f"{name}: skipped (no seed file: is face_recognition_models installed?)", flush=True)
                continue
            print(f"{name}: fuzzing for {f'{seconds / 60:g} min' if seconds else f'{args.examples} examples'} "
                  f"(seed {args.seed})", flush=True)
            restarts = runner.restarts
            camp = fuzz_target(target, seeds, runner, seconds, args.examples, args.seed, args.findings)
            camp.outcomes["restarts"] = runner.restarts - restarts
            camps.append(camp)
    finally:
        runner.close()
        shutil.rmtree(seed_dir, ignore_errors=True)
    print()
    print(f"{'target':<14}{'executions':>12}{'exec/s':>9}{'ok':>8}{'user err':>10}{'restarts':>10}{'findings':>10}")
    for c in camps:
        rate = c.executions / c.seconds if c.seconds else 0.0
        print(f"{c.target:<14}{c.executions:>12,}{rate:>9.1f}{c.outcomes.get('ok', 0):>8,}"
              f"{c.outcomes.get('user_error', 0):>10,}{c.outcomes.get('restarts', 0):>10}{len(c.findings):>10}")
        for result, _, path in c.findings:
            print(f"    {result.describe()} -> {path}")
    return 1 if any(c.findings for c in camps) else 0


if __name__ == "__main__":
    sys.exit(main())
