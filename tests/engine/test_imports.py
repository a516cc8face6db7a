"""Import hygiene: the layers the README's Architecture section describes hold. The
contracts live in pyproject.toml (``[tool.importlinter]``) and ``make lint`` checks them
too; this test makes a broken one a failing test with import-linter's own report, and
checks what a contract cannot say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sptrader"


def test_the_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_textual_private_attributes() -> None:
    """Textual's private attributes change between releases (it is pinned, but upgrades
    must stay a version bump): only its public API is used."""
    private = re.compile(r"\.(_bindings|_nodes|_compose_stacks|_css_styles|_driver)\b")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert offenders == []


def test_only_connect_asks_whether_a_daemon_runs() -> None:
    """Every caller reaches the engine through connect(): apart from it, only process
    control (the daemon and its commands) and offline file maintenance look at the pid."""
    allowed = {
        "sptrader/client/connect.py",
        "sptrader/client/paths.py",
        "sptrader/daemon.py",
        "sptrader/commands/daemon_control.py",
        "sptrader/commands/database.py",
    }
    users = {
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if "running_pid" in path.read_text()
    }
    assert users - allowed == set()
