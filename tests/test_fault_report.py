"""scripts/reliability_report.py: the README's reliability section says where each row ran, and
a GPU run kept under bench/results (records + run description) reads back whole."""

from __future__ import annotations

import importlib.util
import json

from conftest import ROOT

KEPT = ROOT / "bench" / "results" / "2026-12-02-NVIDIA-H200-faults.jsonl"


def _report():
    spec = importlib.util.spec_from_file_location("reliability_report", ROOT / "scripts" / "reliability_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section_of(report, paths, local_outcomes=None, local_records=None) -> str:
    outcomes, records, runs = dict(local_outcomes or {}), list(local_records or []), []
    for path in paths:
        gpu_outcomes, gpu_records, run = report.read_gpu_run(path)
        outcomes.update({f"{test} ({run['where']})": value for test, value in gpu_outcomes.items()})
        records += [{**r, "test": f"{r['test']} ({run['where']})"} for r in gpu_records]
        runs.append({**run, "path": str(path)})
    return report.section(outcomes, records, {}, runs)


def test_the_kept_h200_run_names_its_device_date_and_the_cases_that_failed_before_a_record():
    report = _report()
    text = _section_of(report, [KEPT])
    assert "NVIDIA H200 2026-12-02" in text and "not re-run since" in text
    rows = [line for line in text.splitlines() if line.startswith("| cancel") or line.startswith("| out of memory")]
    assert len(rows) == len(KEPT.read_text().splitlines()) == 6 and all("| NVIDIA H200 2026-12-02 |" in row for row in rows)
    depth = next(row for row in rows if "depth stage" in row)
    assert "failure: cancel latency 5.188 s, over the 2 s limit" in depth  # its own limit, not a pass
    unrecorded = text.split("Failed before writing a fault record:")[1]
    for stage in ("inputs", "inpaint"):
        assert f"[{stage}-cuda] (NVIDIA H200 2026-12-02)`: failure, UndeclaredRead: stage '{stage}' read setting 'cuda_graphs'" in unrecorded


def test_a_folder_from_gpu_faults_sh_reads_its_junit_and_local_rows_say_this_cpu(tmp_path):
    report = _report()
    test = "tests/test_reliability_faults.py::test_real_cuda_out_of_memory_in_the_splat_stage"
    (tmp_path / "faults.jsonl").write_text(json.dumps({"test": test, "fault": "oom", "simulated": False, "lost": []}) + "\n")
    (tmp_path / "run.json").write_text(json.dumps({"date": "2027-01-01", "device": "NVIDIA H200"}))
    (tmp_path / "junit.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.test_reliability_faults" '
        'name="test_real_cuda_out_of_memory_in_the_splat_stage"/></testsuite></testsuites>')
    local = {"test": "tests/test_reliability_faults.py::local", "fault": "local fault", "simulated": True, "lost": []}
    text = _section_of(report, [tmp_path], {local["test"]: ("passed", "")}, [local])
    assert "| oom | NVIDIA H200 2027-01-01 | real | passed |" in text
    assert "| local fault | this CPU | simulated | passed |" in text


def test_cases_are_counted_per_machine():
    report = _report()
    local = {"tests/test_reliability_faults.py::a": ("passed", ""), "tests/test_reliability_faults.py::b": ("skipped", "needs CUDA")}
    text = _section_of(report, [KEPT], local)
    assert "**cases on this CPU: 2**, passed 1, failed 0, skipped 1 (1: needs CUDA)" in text
    assert "**on NVIDIA H200 2026-12-02: 8**, passed 4, failed 4" in text
