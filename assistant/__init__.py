"""A backend for multimodal chat assistants: text, speech and images over one WebSocket API."""

__version__ = "0.1.0"
