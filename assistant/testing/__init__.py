"""Fakes of the ports, shipped with the package the way httpx ships ``MockTransport`` beside its
real transports: for unit tests (this project's and its users'), demos and benchmarks that need no
model weights. Each subclasses the real port, so the port's own public methods (timeouts, error
mapping, cancellation, finish reasons) run exactly as in production.

    language_models   ScriptedLM (the ``scripted`` adapter: a fixed reply or an echo), FailingLM
    memory            MemoryStore: the session store in a dict
    speech            FakeVAD (loudness), FakeSTT (words per second of loud audio), FakeTTS (tones)
    vision            GatedEncoder: two classes, each encoding held until released
"""
