"""Fixtures: throwaway installed distributions and a clean backbone registry."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from gradfeat_plugin.backbones import _registry, refresh_entry_points


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch: pytest.MonkeyPatch):
    """Each test starts with no in-process registrations and fresh entry points."""
    monkeypatch.setattr(_registry, "_registered", {})
    refresh_entry_points()
    yield
    refresh_entry_points()


@pytest.fixture
def install_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., None]:
    """Install a real distribution (``*.dist-info`` + module) on ``sys.path``.

    Call as ``install_distribution(dist, module, source, entry_points)`` where
    ``entry_points`` maps a group to ``{name: "module:attr"}``.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def install(dist: str, module: str, source: str, entry_points: dict) -> None:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        # The directory name carries the normalised name (dashes become underscores).
        info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n"
        )
        sections = [
            f"[{group}]\n" + "".join(f"{n} = {v}\n" for n, v in names.items())
            for group, names in entry_points.items()
        ]
        (info / "entry_points.txt").write_text("\n".join(sections))
        modules.append(module)
        refresh_entry_points()

    yield install
    for module in modules:
        sys.modules.pop(module, None)
