"""The README's quick-start runs from a clean folder and leaves inspectable runs behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_every_rollout_and_retries_the_crashed_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart" / "quickstart.py"), "--db", str(tmp_path / "q.db")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "All 24 rollouts finished" in out
    assert "'unresponsive': 1" in out and "'succeeded': 24" in out
    assert "was retried after its first worker went silent" in out

    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentlightning.cli",
            "runs",
            "list",
            "--store",
            f"sqlite:///{tmp_path / 'q.db'}",
            "--limit",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count("succeeded") == 24
