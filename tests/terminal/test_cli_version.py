"""`possim --version` names the installed version: the first line of a bug report."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from terminal.cli import main


def test_version_flag_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"possim {version('possim')}"
