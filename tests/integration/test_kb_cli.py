"""``assistant kb`` as processes on a real redis-server with the real embedder: a folder of the
four formats added (then again: unchanged), listed, searched (an exact error code from the PDF),
a bad file refused with its code, a document removed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
CORPUS = Path(__file__).resolve().parents[1] / "data" / "kb"


def _kb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assistant", "kb", *args, "--kb", "help"],
                          env=env, capture_output=True, text=True, timeout=240)  # fmt: skip


def test_add_list_search_rm(redis_url, tmp_path):
    folder = tmp_path / "help"
    folder.mkdir()
    for path in CORPUS.glob("*.*"):
        if path.suffix != ".jsonl":
            shutil.copy(path, folder / path.name)
    (folder / "notes.docx").write_bytes(b"PK\x03\x04")  # not a known ending: not picked up
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env.update(ASSISTANT_REDIS_URL=redis_url, ASSISTANT_DATA_DIR=str(tmp_path / "data"),
               HF_HUB_OFFLINE="1")  # fmt: skip
    added = _kb(env, "add", str(folder), "-q")
    assert added.returncode == 0, added.stderr
    assert sorted(line.split(":")[0] for line in added.stdout.splitlines()) == ["added"] * 5
    again = _kb(env, "add", str(folder / "returns.md"), str(folder / "notes.docx"), "-q")
    assert again.stdout.startswith("unchanged: returns.md"), again.stdout
    assert again.returncode == 2 and "error [unsupported_document_type]: notes.docx" in again.stdout
    listed = _kb(env, "list").stdout
    assert {"markdown", "text", "html", "pdf"} <= set(listed.split()), listed
    found = _kb(env, "search", "what does E-517 mean", "-k", "1").stdout
    assert "payments.pdf, p. 1" in found, found
    assert _kb(env, "rm", "payments.pdf").returncode == 0
    assert "payments.pdf" not in _kb(env, "list").stdout
    missing = _kb(env, "rm", "payments.pdf")
    assert missing.returncode == 2 and "[document_not_found]" in missing.stderr
