"""The example CI workflow in docs/ci runs: its xaibench steps, executed on a results tree."""

import shlex
import subprocess
import sys
from pathlib import Path

import click
import yaml
from fake_runs import write_fake_run

from xaibench.cli import cli

WORKFLOW = Path(__file__).resolve().parents[1] / "docs" / "ci" / "leaderboard.yml"


def _steps() -> list[dict]:
    document = yaml.safe_load(WORKFLOW.read_text())
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def _commands() -> list[str]:
    lines = []
    for step in _steps():
        for line in str(step.get("run", "")).splitlines():
            if line.strip():
                lines.append(line.strip())
    return lines


def test_every_xaibench_command_and_option_in_the_workflow_exists():
    used = [shlex.split(line) for line in _commands() if line.startswith("xaibench ")]
    assert {args[1] for args in used} >= {"run", "leaderboard", "report"}
    with click.Context(cli) as ctx:
        for args in used:
            command = cli.get_command(ctx, args[1])
            assert command is not None, args
            known = {opt for param in command.params for opt in param.opts}
            options = {a for a in args[2:] if a.startswith("-")}
            assert options <= known, (args, options - known)


def test_the_workflow_steps_build_check_and_publish(tmp_path):
    """Run the leaderboard job's shell steps (not pip, not the benchmark) in a results repo."""
    write_fake_run(tmp_path / "results" / "run-a", {"strong": 2.5, "weak": 0.2})
    env_bin = Path(sys.executable).parent
    xaibench = f"{shlex.quote(sys.executable)} -m xaibench"

    def sh(line: str) -> subprocess.CompletedProcess:
        line = line.replace("xaibench ", f"{xaibench} ", 1) if line.startswith("xaibench") else line
        return subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env={"PATH": f"{env_bin}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip

    lines = [line for line in _commands() if not line.startswith(("python -m pip", "xaibench run"))]
    check = next(line for line in lines if "--check" in line)
    # first the repository has no committed leaderboard: build one as its README says
    build = next(line for line in lines if "leaderboard results/*" in line)
    assert sh(build).returncode == 0
    assert sh(check).returncode == 0
    for line in lines:
        proc = sh(line)
        assert proc.returncode == 0, (line, proc.stderr)
    site = tmp_path / "site"
    assert (site / "index.html").stat().st_size > 10_000
    assert (site / "leaderboard.html").is_file()
    assert (site / "leaderboard.json").is_file()
    # a hand edit of a committed number fails the pull-request check
    md = tmp_path / "leaderboard" / "leaderboard_performance.md"
    md.write_text(md.read_text().replace("| strong |", "| str0ng |"))
    proc = sh(check)
    assert proc.returncode == 1
    assert "leaderboard_performance.md" in proc.stderr
