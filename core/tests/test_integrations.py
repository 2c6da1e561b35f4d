"""Integration packages announce themselves through an entry-point group; the core lists and enables them."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentlightning as agl
from agentlightning.cli import main


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution installed on sys.path: ``agentlightning-toyframework`` 1.2.3, whose module counts calls."""
    (tmp_path / "agl_toy.py").write_text(
        textwrap.dedent(
            """
            calls = []
            def instrument():
                calls.append("instrument")
            def uninstrument():
                calls.append("uninstrument")
            """
        )
    )
    (tmp_path / "agl_broken.py").write_text("instrument = 'not a function'\n")
    info = tmp_path / "agentlightning_toyframework-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: agentlightning-toyframework\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(
        "[agentlightning.integrations]\ntoyframework = agl_toy\nbroken = agl_broken\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("agl_toy", None)
    sys.modules.pop("agl_broken", None)


def test_installed_integrations_are_listed_and_instrumented_by_name(installed: Path) -> None:
    found = {i.name: i for i in agl.installed_integrations()}
    assert found["toyframework"] == agl.Integration("toyframework", "agentlightning-toyframework", "1.2.3", "agl_toy")
    assert agl.instrument("toyframework") == ["toyframework"]
    assert agl.uninstrument("toyframework") == ["toyframework"]
    import agl_toy  # type: ignore[import-not-found]

    assert agl_toy.calls == ["instrument", "uninstrument"]


def test_unknown_or_broken_integrations_are_clear_errors(installed: Path) -> None:
    # the list names what is installed here: the fakes, and any real integration of the environment
    with pytest.raises(
        agl.IntegrationError, match=r"No integration named 'nosuchframework' is installed \(installed: [^)]*broken, "
    ):
        agl.instrument("nosuchframework")
    with pytest.raises(agl.IntegrationError, match="agl_broken has no instrument"):
        agl.instrument("broken")


def test_agl_integrations_lists_them(installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["integrations"]) == 0
    out = capsys.readouterr().out
    assert "toyframework" in out and "agentlightning-toyframework 1.2.3" in out
