"""How stored messages read to the language model: text-only messages rendered once and kept (a
turn renders only what is new); messages with images resolved per turn, the way the model's
capabilities ask for (projected embeddings, the pixels, or a text description of each image)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from assistant import heap
from assistant.messages import ImagePart, Message
from assistant.ports import IMAGE_MARKER, LanguageModel, PromptImage, PromptMessage
from assistant.vision.pipeline import ImagePipeline

_PLAIN_PROMPTS_MAX = 16_384


class MessageRenderer:
    def __init__(self, llm: LanguageModel) -> None:
        self.llm = llm
        # Text-only messages as the model reads them, by message id (with the message they were
        # made from: a hit must be that very object), so a turn renders only what is new.
        self._plain: dict[str, tuple[Message, PromptMessage]] = {}
        heap.track("rendered_messages", self, _PLAIN_PROMPTS_MAX, lambda r: len(r._plain))

    async def for_history(
        self, history: Sequence[Message], vision: ImagePipeline | None
    ) -> Callable[[Message], PromptMessage]:
        """How each message reads to the model; images are resolved now (embeddings from the
        cache or the encoder, or descriptions for a model that takes text only)."""
        with_images = {m.id: await self._render_images(m, vision) for m in history if m.images}
        plain = self._plain

        def render(message: Message) -> PromptMessage:
            if message.id in with_images:
                return with_images[message.id]
            rendered = plain.get(message.id)
            if rendered is None or rendered[0] is not message:
                rendered = (
                    message,
                    PromptMessage(message.role, message.text.replace(IMAGE_MARKER, "")),
                )
                if len(plain) >= _PLAIN_PROMPTS_MAX:
                    del plain[next(iter(plain))]  # the oldest first out
                plain[message.id] = rendered
            return rendered[1]

        return render

    async def _render_images(
        self, message: Message, vision: ImagePipeline | None
    ) -> PromptMessage:
        text = message.text.replace(IMAGE_MARKER, "")
        count = len(message.images)
        if vision is None:
            return PromptMessage(message.role, f"[{count} image(s) not shown]\n{text}")
        if self.llm.capabilities.images or (
            self.llm.capabilities.embeddings and vision.projector is not None
        ):
            images = tuple([await self._prompt_image(vision, part) for part in message.images])
            lines = [
                f"Image {i + 1}: {IMAGE_MARKER}" if count > 1 else IMAGE_MARKER
                for i in range(count)
            ]
            return PromptMessage(message.role, "\n".join([*lines, text]), images)
        described = [await vision.describe(part) for part in message.images]
        lines = [f"[Image {i + 1}: {d}]" for i, d in enumerate(described)]
        return PromptMessage(message.role, "\n".join([*lines, text]))

    async def _prompt_image(self, vision: ImagePipeline, part: ImagePart) -> PromptImage:
        """Pixels for a model that takes images itself; else projected embeddings."""
        if self.llm.capabilities.images:
            return PromptImage(key=part.sha256, pixels=await vision.pixels(part))
        return PromptImage(key=part.sha256, embeddings=await vision.embeddings(part))
