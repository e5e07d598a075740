"""The interfaces adapters implement. The core talks to the outside world only through these.

Each port's public method owns timeouts, metrics and error mapping; an adapter implements the small
``_..._impl`` method beneath it. Capabilities are declared as data (``LanguageModelCapabilities``),
never discovered with ``isinstance``.
"""

from __future__ import annotations

from assistant.messages import MessageStatus
from assistant.ports.language_model import (
    IMAGE_MARKER,
    CancelToken,
    EmbeddingTable,
    FinishReason,
    Generation,
    GenerationOptions,
    LanguageModel,
    LanguageModelCapabilities,
    Prompt,
    PromptImage,
    PromptMessage,
    PromptRole,
    Usage,
    iterate_in_thread,
)
from assistant.ports.memory import (
    AppendResult,
    ConversationSummary,
    PartialReply,
    SessionLimits,
    SessionSnapshot,
    SessionStore,
    TurnStart,
    check_tenant,
)
from assistant.ports.speech import (
    SAMPLE_RATE,
    SpeechToText,
    SpeechToTextCapabilities,
    TextToSpeech,
    TextToSpeechCapabilities,
    Transcript,
    VoiceActivity,
    VoiceActivityStream,
)
from assistant.ports.vision import (
    ImageFeatures,
    ImageProjector,
    VisionEncoder,
    VisionEncoderCapabilities,
)

__all__ = [
    "AppendResult",
    "CancelToken",
    "ConversationSummary",
    "EmbeddingTable",
    "FinishReason",
    "Generation",
    "GenerationOptions",
    "IMAGE_MARKER",
    "ImageFeatures",
    "ImageProjector",
    "LanguageModel",
    "LanguageModelCapabilities",
    "MessageStatus",
    "PartialReply",
    "Prompt",
    "PromptImage",
    "PromptMessage",
    "PromptRole",
    "SAMPLE_RATE",
    "SessionLimits",
    "SessionSnapshot",
    "SessionStore",
    "SpeechToText",
    "SpeechToTextCapabilities",
    "TextToSpeech",
    "TextToSpeechCapabilities",
    "Transcript",
    "TurnStart",
    "Usage",
    "VisionEncoder",
    "VisionEncoderCapabilities",
    "VoiceActivity",
    "VoiceActivityStream",
    "check_tenant",
    "iterate_in_thread",
]
