"""Run the reliability suite (tests/test_reliability_*.py, issue 7) and write what it exercised
into README.md's "Reliability" section, between the markers below (added at the end if absent).

    .venv/bin/python scripts/reliability_report.py [--runs 10] [--gpu PATH ...] [--no-readme]

Every fault line comes from a record the fault's test wrote (tests/reliability.py record_fault:
what was injected, real or simulated, what its checks found lost, what was measured) joined with
that test's outcome; nothing here describes a fault by itself.  ``--gpu PATH`` adds one GPU run
of bench/gpu_faults.sh: the folder it wrote (faults.jsonl, junit.xml, run.json), or the run as
kept under bench/results (``DATE-DEVICE-faults.jsonl`` beside ``DATE-DEVICE-faults.run.json``,
which says where and when it ran, and holds the outcomes where no junit.xml was kept).  Tests of
a run that failed before writing a record are listed with their failure.  The load test runs
``--runs`` Generate runs in one Blender session.  Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- reliability:start -->", "<!-- reliability:end -->"
FILES = {
    "test_reliability_inputs": "bad inputs (CLI)",
    "test_reliability_blender": "bad cameras (Blender)",
    "test_reliability_faults": "faults (see below)",
    "test_reliability_safety": "safety: no pickle/shell, job.json as data, writes confined",
    "test_reliability_load": "load: Generate runs in one Blender session",
}


def read_junit(path: Path) -> dict[str, tuple[str, str]]:
    """test id (tests/<module>.py::<name>) -> (outcome, the skip reason or failure message)."""
    outcomes = {}
    for case in ET.parse(path).iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        child = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        outcome = child.tag if child is not None else "passed"
        reason = (child.get("message") or "").splitlines()[0] if child is not None and child.get("message") else ""
        outcomes[f"tests/{module}.py::{case.get('name')}"] = (outcome, reason)
    return outcomes


def read_gpu_run(path: Path) -> tuple[dict[str, tuple[str, str]], list[dict], dict]:
    """(outcomes, records, run description) of one GPU run (see the module's docstring)."""
    if path.is_dir():
        records, junit, described = path / "faults.jsonl", path / "junit.xml", path / "run.json"
    else:
        stem = path.name.removesuffix(".jsonl")
        records, junit, described = path, path.with_name(f"{stem}.junit.xml"), path.with_name(f"{stem}.run.json")
    run = json.loads(described.read_text(encoding="utf-8")) if described.exists() else {}
    if junit.exists():
        outcomes = read_junit(junit)
    else:
        outcomes = {test: (kept["outcome"], kept.get("message", "")) for test, kept in run.get("outcomes", {}).items()}
    where = " ".join(filter(None, (run.get("device", "GPU"), run.get("date", ""))))
    return outcomes, [{**r, "where": where} for r in read_records(records)], {**run, "where": where}


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_suite(runs: int, folder: Path) -> tuple[int, dict, list[dict], dict]:
    junit, load, faults = folder / "junit.xml", folder / "load.json", folder / "faults.jsonl"
    env = {**os.environ, "GEN3D_LOAD_RUNS": str(runs), "GEN3D_LOAD_REPORT": str(load), "GEN3D_FAULT_REPORT": str(faults)}
    tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_reliability_*.py"))
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", f"--junitxml={junit}", *tests], cwd=ROOT, env=env)
    load_numbers = json.loads(load.read_text()) if load.exists() else {}
    return code, read_junit(junit), read_records(faults), load_numbers


def _commit() -> str:
    described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return described.stdout.strip() or "an unknown commit"


def section(outcomes: dict, records: list[dict], load: dict, gpu_runs: list[dict]) -> str:
    gpu_suffixes = tuple(f" ({run['where']})" for run in gpu_runs)
    per_module: dict[str, Counter] = {}  # this machine's cases
    per_run: dict[str, Counter] = {run["where"]: Counter() for run in gpu_runs}  # GPU runs' cases, by where they ran
    for test, (outcome, _) in outcomes.items():
        module = test.split("::")[0].removeprefix("tests/").removesuffix(".py")
        if module not in FILES:
            continue
        if test.endswith(gpu_suffixes):
            per_run[test.rsplit(" (", 1)[1][:-1]][outcome] += 1
        else:
            per_module.setdefault(module, Counter())[outcome] += 1
    total = sum(per_module.values(), Counter())
    failed = total["failure"] + total["error"]
    skipped = Counter(reason for test, (outcome, reason) in outcomes.items() if outcome == "skipped" and not test.endswith(gpu_suffixes))
    for record in records:
        outcome, message = outcomes.get(record["test"], ("not run", ""))
        record["outcome"] = f"{outcome}: {message}" if outcome in ("failure", "error") and message else outcome
    recorded = {record["test"] for record in records}
    unrecorded = [(test, outcome, message) for test, (outcome, message) in outcomes.items()
                  if outcome in ("failure", "error") and test not in recorded and test.split("::")[0].removeprefix("tests/").removesuffix(".py") in FILES]
    real = [r for r in records if not r["simulated"]]
    survived = [r for r in records if r["outcome"] == "passed" and not r["lost"]]
    lost = [item for r in records for item in (r["lost"] or [])]
    lines = [
        START,
        "## Reliability",
        "",
        "Issue 7's suite (`tests/test_reliability_*.py`) runs the real engine (as a subprocess, or its `main()`",
        "in-process where a fault is injected into a stage) and real Blender 5.0. This section is written by",
        "`.venv/bin/python scripts/reliability_report.py"
        + "".join(f" --gpu {run['path']}" for run in gpu_runs) + "`"
        + (", its GPU rows from kept runs of `bench/gpu_faults.sh`." if gpu_runs else "; no GPU records were given."),
        "",
        f"* **where it ran**: the CPU rows on this machine's CPU ({os.cpu_count()} cores), {date.today().isoformat()},"
        f" when this section was written (engine at {_commit()})"
        + "".join(f"; the rows on {run['where']}: {run.get('command', '')}, engine {run.get('engine', '')}"
                  f"{'; ' + run['outcomes_source'] if run.get('outcomes_source') else ''}; not re-run since"
                  for run in gpu_runs),
        f"* **cases on this CPU: {sum(total.values())}**, passed {total['passed']}, failed {failed}, skipped {total['skipped']}"
        + "".join(f" ({count}: {reason})" for reason, count in skipped.items())
        + "".join(f"; **on {where}: {sum(counts.values())}**, passed {counts['passed']}, failed {counts['failure'] + counts['error']}"
                  for where, counts in per_run.items()),
        f"* **faults injected: {len(records)}** ({len(real)} real, {len(records) - len(real)} simulated), "
        f"**survived {len(survived)}** (its test passed and its checks found nothing lost)",
        f"* **anything lost: {len(lost)}** (counted by the fault tests' checks: stages finished before the fault"
        " that are no longer finished or were redone, `done.json` naming a missing output, temporary files left)"
        + ("".join(f"; {item}" for item in lost)),
        "",
        "| fault | where | real or simulated | outcome | measured |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        measured = []
        if "latency_s" in r:
            measured.append(f"cancel→exit {r['latency_s']:.3f} s, stopped: {r['stopped']}")
        if "settings" in r:
            measured.append(r["settings"])
        if "exit" in r:
            measured.append(f"exit {r['exit']}")
        if r["lost"] is None:
            measured.append("no job involved")
        lines.append(f"| {r['fault']} | {r.get('where', 'this CPU')} | {'simulated' if r['simulated'] else 'real'} | {r['outcome']} | {', '.join(measured)} |")
    if unrecorded:
        lines += ["", "Failed before writing a fault record:", ""]
        lines += [f"* `{test}`: {outcome}, {message}" for test, outcome, message in unrecorded]
    lines += ["", "| suite (this CPU) | cases | passed | skipped |", "|---|---|---|---|"]
    for module, title in FILES.items():
        counts = per_module.get(module, Counter())
        lines.append(f"| {title} | {sum(counts.values())} | {counts['passed']} | {counts['skipped']} |")
    if load:
        lines += [
            "",
            f"Load: {load['runs']} Generate runs in a row in one Blender session (offline profile, 64 px): "
            f"{load['child_processes_left']} child processes and {load['zombies']} zombies left, threads "
            f"{load['threads_first']} → {load['threads_last']}, open files {load['fds_first']} → {load['fds_last']}, "
            f"objects {load['objects_first']} → {load['objects_last']}, resident memory {load['rss_before_mb']:.0f} MB before, "
            f"{load['rss_first_mb']:.0f} MB after the first run, {load['rss_last_mb']:.0f} MB after the last "
            f"({load['rss_growth_mb']:+.1f} MB).",
        ]
    lines.append(END)
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text(encoding="utf-8")
    if START in content and END in content:
        before, rest = content.split(START, 1)
        content = before + text + rest.split(END, 1)[1]
    else:
        content = content.rstrip("\n") + "\n\n" + text + "\n"
    readme.write_text(content, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="Generate runs of the load test")
    parser.add_argument("--gpu", type=Path, action="append", default=[], help="a folder bench/gpu_faults.sh wrote")
    parser.add_argument("--no-readme", action="store_true", help="print the section only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gen3d-reliability-") as folder:
        code, outcomes, records, load = run_suite(args.runs, Path(folder))
    gpu_runs = []
    for gpu in args.gpu:
        gpu_outcomes, gpu_records, run = read_gpu_run(gpu)
        outcomes.update({f"{test} ({run['where']})": value for test, value in gpu_outcomes.items()})
        records += [{**r, "test": f"{r['test']} ({run['where']})"} for r in gpu_records]
        gpu_runs.append({**run, "path": str(gpu)})
    text = section(outcomes, records, load, gpu_runs)
    print(text)
    if not args.no_readme:
        write_readme(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
