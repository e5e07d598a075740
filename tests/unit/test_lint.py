"""The code passes the project's lint rules (pyproject ``[tool.ruff]``): no undefined names, no
unused imports, sorted imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is installed by the set-up (requirements.lock)"
    done = subprocess.run(
        [ruff, "check", "--no-cache", "assistant", "adapters", "bench", "tests"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
