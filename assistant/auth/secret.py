"""The server's secret: from the settings, or generated once into the data directory."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_FILE = "auth.secret"


def server_secret(configured: str, data_dir: Path) -> bytes:
    """``configured`` when set; else the data directory's secret file, created (mode 0600) on
    first use. Every worker of one data directory reads the same file."""
    if configured:
        return configured.encode()
    path = data_dir / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{SECRET_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_urlsafe(48).encode())
    try:  # link is atomic: when two workers race, one secret wins and both read it
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()
