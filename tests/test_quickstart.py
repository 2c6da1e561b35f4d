"""The README's quick-start runs from a clean folder and leaves inspectable runs behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_the_agent_over_the_dataset_and_shows_the_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart" / "quickstart.py"), "--db", str(tmp_path / "q.db")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # 6 tasks x 4 rollouts; the division by zero fails all 4 of its rollouts, with the reason shown.
    assert "24 rollouts: 20 succeeded, 4 failed" in out
    assert "ZeroDivisionError: cannot divide 40 by zero" in out
    assert f"The store is {tmp_path / 'q.db'}" in out

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
    assert listing.stdout.count("succeeded") == 20 and listing.stdout.count("failed") == 4
