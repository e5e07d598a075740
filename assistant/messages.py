"""Domain models: content parts, messages and session metadata, as stored and as passed around
inside the server. Wire shapes live in ``assistant.protocol``; these are the storage shapes.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]
#: ``unanswered``: the bot's fallback reply, when nothing in its knowledge base was relevant
#: (no model call; see ``assistant.knowledge.answer``).
MessageStatus = Literal["completed", "interrupted", "incomplete", "unanswered"]
#: How a response ended (a cancelled or failed one is stored ``interrupted``).
ResponseStatus = Literal["completed", "cancelled", "incomplete", "failed"]
#: Who answers a conversation (``assistant.handoff.status``): the bot, nobody yet (a person was
#: asked for), a person (an agent claimed it), or nobody (resolved).
ConversationStatus = Literal["bot", "waiting_human", "human", "resolved"]


class _Ids:
    """Unique ids, cheap: a random 48-bit base per process (drawn again in a forked child) and a
    counter. Unique across processes and restarts, not secret: what must not be guessed (session
    ids) comes from ``secret_id``."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.base = secrets.token_hex(6)
        self.counter = itertools.count(secrets.randbits(24))
        self.prefixes: dict[str, str] = {}  # "msg" -> "msg_<base>"


_IDS = _Ids()


def new_id(prefix: str) -> str:
    """A unique id with a readable prefix: ``msg_3f9a0c12d4e5000a1b2c`` (20 hex digits or more)."""
    ids = _IDS
    head = ids.prefixes.get(prefix)
    if head is None:
        head = ids.prefixes[prefix] = f"{prefix}_{ids.base}"
    return f"{head}{next(ids.counter):08x}"


def secret_id(prefix: str) -> str:
    """A random, unguessable id (80 bits) with a readable prefix: for session ids, which let a
    client resume a conversation."""
    return f"{prefix}_{secrets.token_hex(10)}"


def now_ms() -> int:
    return int(time.time() * 1000)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Citation(_Frozen):
    """A source a reply was answered from: OpenAI's ``file_citation`` annotation, with where in
    the document it is and the quoted span. ``index`` is the character offset in the reply of its
    ``[number]`` marker (the reply's end when the reply cites no source by number)."""

    type: Literal["file_citation"] = "file_citation"
    file_id: str
    filename: str
    index: int
    number: int  #: the source's number in the prompt: the reply's ``[n]``
    title: str = ""
    heading: str = ""
    page: int | None = None
    quote: str = ""


def _empty(value: tuple[object, ...]) -> bool:
    return not value


class TextPart(_Frozen):
    type: Literal["text"] = "text"
    text: str
    #: A grounded reply's sources (left out of the stored JSON when there are none).
    annotations: tuple[Citation, ...] = Field((), exclude_if=_empty)


class ImagePart(_Frozen):
    """An image, stored by reference to a content-addressed blob (its sha256)."""

    type: Literal["image"] = "image"
    sha256: str
    mime_type: str = "image/png"


class AudioPart(_Frozen):
    """Speech the user sent; the transcript is what the language model reads."""

    type: Literal["audio"] = "audio"
    transcript: str = ""
    duration_s: float | None = None


class PendingImage(_Frozen):
    """An image as the client sent it (a data URL), before it is validated and stored. The
    orchestrator turns it into an ``ImagePart``; it is never stored itself."""

    type: Literal["pending_image"] = "pending_image"
    source: str


class PendingAudio(_Frozen):
    """An uploaded audio file as the client sent it (base64), before the server transcribes it
    into an ``AudioPart``; it is never stored itself."""

    type: Literal["pending_audio"] = "pending_audio"
    audio: str


ContentPart = Annotated[
    TextPart | ImagePart | AudioPart | PendingImage | PendingAudio, Field(discriminator="type")
]


class Message(_Frozen):
    id: str = Field(default_factory=lambda: new_id("msg"))
    role: Role
    content: tuple[ContentPart, ...]
    status: MessageStatus = "completed"
    # The client's own id for the turn: a retried send with the same turn id is stored once.
    turn_id: str | None = None
    created_at: int = Field(default_factory=now_ms)
    #: Who wrote an assistant message other than the bot: ``agent:<key id>`` for a human agent's
    #: reply (``assistant.handoff``); left out of the stored JSON when None (the bot's).
    author: str | None = Field(None, exclude_if=lambda value: value is None)

    @property
    def images(self) -> tuple[ImagePart, ...]:
        content = self.content
        if len(content) == 1 and type(content[0]) is TextPart:  # most messages: no scan
            return ()
        return tuple(p for p in content if isinstance(p, ImagePart))

    @property
    def text(self) -> str:
        """The message as plain text: text parts and audio transcripts joined."""
        content = self.content
        if len(content) == 1 and type(content[0]) is TextPart:  # most messages
            return content[0].text
        pieces: list[str] = []
        for part in self.content:
            if isinstance(part, TextPart):
                pieces.append(part.text)
            elif isinstance(part, AudioPart) and part.transcript:
                pieces.append(part.transcript)
        return "\n".join(pieces)

    @classmethod
    def from_text(cls, role: Role, text: str, **kwargs: object) -> Message:
        return cls(role=role, content=(TextPart(text=text),), **kwargs)


class SessionInfo(BaseModel):
    """A session's metadata; its messages are stored beside it."""

    # Fields a newer or older version stored (``owner`` and ``summary`` once were) are ignored.
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    created_at: int = Field(default_factory=now_ms)
    instructions: str | None = None
    #: Changed only by the handoff's transitions (``ConversationStore.transition``), never by
    #: ``update_info``; read with every turn, so a held conversation costs no extra round trip.
    status: ConversationStatus = "bot"
