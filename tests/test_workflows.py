"""The project's own rules for its GitHub Actions workflows (the schema is checked by
`make workflows`, with check-jsonschema): CPU CI runs the README's test command, the GPU job
targets the self-hosted `gpu` runners, keeps forks off them and spends GPU time only on what needs
a GPU, and both keep their artefacts."""

from pathlib import Path

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parents[1] / ".github" / "workflows"


def _load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def _runs(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def _uploads(job: dict) -> str:
    return "\n".join(
        step["with"]["path"]
        for step in job["steps"]
        if step.get("uses", "").startswith("actions/upload-artifact@")
    )


def test_cpu_job_runs_make_test_in_debian_and_keeps_the_book_and_screenshots():
    job = _load("ci.yml")["jobs"]["cpu"]
    assert "make test" in _runs(job)
    assert "bookworm" in job["container"]  # Debian: the chromium the browser tests expect
    assert "_build/html" in _uploads(job) and "_build/screenshots" in _uploads(job)


def test_gpu_job_runs_only_what_needs_a_gpu_and_uploads_the_kernel_table():
    job = _load("gpu.yml")["jobs"]["gpu"]
    assert set(job["runs-on"]) == {"self-hosted", "gpu"}
    assert "head.repo.full_name == github.repository" in job["if"]  # no fork code on our runners
    lines = [line.strip() for run in _runs(job) for line in run.splitlines()]
    makes = [line.split()[1] for line in lines if line.startswith("make ")]
    assert makes == ["setup", "gpu-check"]  # the CPU job runs the rest; GPU time is for the GPU
    assert _uploads(job).split() == ["book/data/gpu_bench.json"]


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_every_action_is_pinned_to_a_version_and_permissions_are_read_only(name):
    workflow = _load(name)
    assert workflow["permissions"] == {"contents": "read"}
    for job in workflow["jobs"].values():
        assert job.get("timeout-minutes"), "a job without a timeout can hold a runner for 6 h"
        for step in job["steps"]:
            if "uses" in step:
                assert "@v" in step["uses"], step["uses"]
