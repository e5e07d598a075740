"""Support code shared by the tests, and nothing else: a test module never imports another test
module; what two of them need lives here, in a module named for what it owns.

- ``audio``: synthetic signals (tones, silence, PCM16 chunks) and real-speech file helpers
  (WAV reading, WebM/Opus encoding, espeak-ng speech, word lists).
- ``redis``: counting what reaches a Redis socket; waiting for keys to expire.
- ``tiny_models``: tiny random language models and byte-level BPE tokenizers trained offline,
  and hooks that steer or count a model's forward passes.
- ``tiny_llava``: a tiny random LLaVA (vision tower, language model, processor) saved as a checkpoint.
- ``waiting``: bounded waits for a condition (sync and async) instead of fixed sleeps.
- ``ws``: reading a /v1/realtime WebSocket through Starlette's TestClient.

The fakes of the ports (scripted language models, the in-memory store, speech fakes) are not
here: they live in ``assistant.testing``, beside the ports they implement.
"""
