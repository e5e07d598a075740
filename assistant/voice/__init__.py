"""Voice: PCM framing and audio files (``audio``), end-of-turn detection (``turn_detection``), the
streaming transcript (``streaming_transcript``), one connection's voice pipeline (``pipeline``),
spoken replies (``spoken_reply``), the process's speech models (``models``) and uploaded audio
(``uploads``). Transport-agnostic: the server maps its events to the wire."""
