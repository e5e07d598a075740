"""Decode and validate an image a client sent: a ``data:`` URL or raw bytes -> RGB uint8 pixels.

Accepted: PNG, JPEG, WebP and GIF (the first frame), converted to RGB (transparency composited on
white, EXIF orientation applied). Refused with an ``InvalidRequestError`` carrying a stable code:

    code                        when
    image_url_not_allowed       an http(s) URL: the server never fetches images
    invalid_image_url           not a data URL, not base64, or bad base64
    image_too_large             more encoded bytes than ``ImageLimits.max_bytes``
    image_too_many_pixels       a header claiming more than ``max_pixels`` or a side over ``max_side``
                                (a decompression bomb), refused before any pixel is decoded
    unsupported_image_format    an image, but not one of the four formats (BMP, TIFF, SVG, HEIC...)
    invalid_image               not an image at all, or a truncated / corrupt one

Decoding is blocking CPU work: call it off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from assistant import heap
from assistant.errors import InvalidRequestError

INVALID_IMAGE_URL = "invalid_image_url"
IMAGE_URL_NOT_ALLOWED = "image_url_not_allowed"
IMAGE_TOO_LARGE = "image_too_large"
IMAGE_TOO_MANY_PIXELS = "image_too_many_pixels"
UNSUPPORTED_IMAGE_FORMAT = "unsupported_image_format"
INVALID_IMAGE = "invalid_image"

#: Pillow format name -> the MIME type reported for it. Only these are ever decoded.
FORMATS: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
#: A JPEG with a multi-picture extension (many phone photos) opens as Pillow's "MPO".
_MIME_TYPES = {**FORMATS, "MPO": "image/jpeg"}
#: Magic bytes of common image formats that are refused as unsupported rather than "not an image".
_OTHER_IMAGE_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"8BPS", "PSD"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (4, b"ftyp", "HEIF/AVIF"),
)
_OTHER_TEXT_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = ((b"<svg", "SVG"), (b"<?xml", "SVG/XML"))
_EXIF_ORIENTATION = 0x0112
# Pillow warns on stderr about a header past its own pixel limit (89 MP) before ours is checked,
# a line per size a client sends (the fuzzer filled the log): our limits decide, and say so.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
#: Decoding an image larger than this gives its memory back to the system afterwards.
_TRIM_PIXELS = 4_000_000
_DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)", re.DOTALL)


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024  # encoded size
    max_pixels: int = 40_000_000  # width * height as the header declares it
    max_side: int = 8192  # the longer side

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_pixels, self.max_side) < 1:
            raise ValueError(f"image limits must be positive: {self}")


@dataclass(frozen=True, eq=False)
class DecodedImage:
    pixels: np.ndarray | None  # (H, W, 3) uint8 RGB; None when only validated
    sha256: str  # hex digest of the encoded bytes: the content address and the features' cache key
    mime_type: str  # of the actual content (may differ from what a data URL declared)
    width: int
    height: int
    encoded: bytes = field(default=b"", repr=False)  # the bytes as sent: what the store keeps


DEFAULT_LIMITS = ImageLimits()


def decode_image(
    source: str | bytes,
    limits: ImageLimits = DEFAULT_LIMITS,
    *,
    pixels: bool = True,
    min_side: int | None = None,
) -> DecodedImage:
    """A data URL (``str``) or the encoded bytes of an image -> its RGB pixels. ``pixels=False``
    decodes the image to validate it but keeps no pixels (no RGB copy is made); ``min_side``
    shrinks the pixels by a whole factor while their shorter side stays at least that long (an
    8192-pixel photo for a 224-pixel encoder costs 1/16 of the memory)."""
    if isinstance(source, str):
        _, source = parse_data_url(source, limits)
    return decode_image_bytes(bytes(source), limits, pixels=pixels, min_side=min_side)


def decode_image_url(url: str, limits: ImageLimits = DEFAULT_LIMITS) -> DecodedImage:
    _, data = parse_data_url(url, limits)
    return decode_image_bytes(data, limits)


def parse_data_url(url: str, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[str, bytes]:
    """``data:image/...;base64,...`` -> (declared MIME type, encoded bytes). The size limit is checked
    on the base64 text's length before it is decoded."""
    url = url.strip()
    scheme = url[:8].lower()
    if scheme.startswith(("http://", "https://")):
        raise InvalidRequestError(
            "image URLs are not fetched by the server: send the image inline as a data URL "
            "(data:image/png;base64,...)",
            code=IMAGE_URL_NOT_ALLOWED,
        )
    if len(url) > 2 * (limits.max_bytes * 4 // 3) + 1024:  # room for a blank per base64 character
        raise _too_large(len(url) * 3 // 4, limits)
    match = _DATA_URL.fullmatch(url) if scheme.startswith("data:") else None
    if match is None:
        raise InvalidRequestError(
            "an image must be a data URL (data:image/png;base64,...)", code=INVALID_IMAGE_URL
        )
    mime = match["mime"].strip().lower()
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    if "base64" not in params:
        raise InvalidRequestError("an image data URL must be base64-encoded", code=INVALID_IMAGE_URL)
    if not mime.startswith("image/"):
        raise InvalidRequestError(
            f"a data URL of type {mime or 'text/plain'!r} is not an image; "
            "send PNG, JPEG, WebP or GIF",
            code=UNSUPPORTED_IMAGE_FORMAT,
        )
    payload = "".join(match["data"].split())  # line breaks of MIME-style base64 are allowed
    if len(payload) // 4 * 3 > limits.max_bytes + 2:  # decoded size, padding at most 2 bytes
        raise _too_large(len(payload) // 4 * 3, limits)
    try:
        return mime, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        message = f"the image data URL is not valid base64 ({exc})"
        raise InvalidRequestError(message, code=INVALID_IMAGE_URL) from exc


def decode_image_bytes(
    data: bytes,
    limits: ImageLimits = DEFAULT_LIMITS,
    *,
    pixels: bool = True,
    min_side: int | None = None,
) -> DecodedImage:
    """Encoded image bytes -> RGB pixels; the header's size is checked before any decoding.
    ``pixels`` and ``min_side`` as for ``decode_image``."""
    if len(data) > limits.max_bytes:
        raise _too_large(len(data), limits)
    if not data:
        raise InvalidRequestError("the image is empty", code=INVALID_IMAGE)
    try:
        with Image.open(io.BytesIO(data), formats=tuple(FORMATS)) as image:
            _check_size(image.size, limits)  # the header only: nothing decoded yet
            mime_type = _MIME_TYPES[image.format or ""]
            width, height = image.size
            rgb = _rgb_pixels(image, min_side) if pixels else _validated(image)
    except UnidentifiedImageError:
        raise _not_an_accepted_image(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidRequestError(
            f"the image declares too many pixels ({exc})", code=IMAGE_TOO_MANY_PIXELS
        ) from exc
    except InvalidRequestError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError) as exc:
        message = f"the image is truncated or corrupt ({_reason(exc)})"
        raise InvalidRequestError(message, code=INVALID_IMAGE) from exc
    digest = hashlib.sha256(data).hexdigest()
    if width * height > _TRIM_PIXELS:
        heap.trim()  # the full-size raster is freed: its pages go back to the system
    return DecodedImage(
        pixels=rgb, sha256=digest, mime_type=mime_type, width=width, height=height, encoded=data
    )


def _reason(exc: Exception) -> str:
    """Pillow's reason without what it quotes of the data ("broken PNG file (chunk b'...')")."""
    reason = str(exc).split(" (", 1)[0].strip()
    return reason if reason and "b'" not in reason and 'b"' not in reason else "unreadable data"


def _check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InvalidRequestError(f"the image has no pixels ({width}x{height})", code=INVALID_IMAGE)
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise InvalidRequestError(
            f"the image is {width}x{height} pixels; at most {limits.max_pixels} pixels and "
            f"{limits.max_side} per side are accepted",
            code=IMAGE_TOO_MANY_PIXELS,
        )


def _validated(image: Image.Image) -> None:
    """Decode the first frame (a truncated or corrupt image fails here), in its own mode."""
    image.seek(0)
    image.load()


def _rgb_pixels(image: Image.Image, min_side: int | None = None) -> np.ndarray:
    """Decode the current (first) frame -> (H, W, 3) uint8, transparency composited on white;
    with ``min_side``, shrunk by a whole factor first (a JPEG is even decoded smaller)."""
    image.seek(0)
    if min_side is not None and image.format == "JPEG":  # decoded at 1/2, 1/4 or 1/8 scale
        scale = max(1, min(image.size) // min_side)
        image.draft("RGB", (image.size[0] // scale, image.size[1] // scale))
    image.load()
    factor = max(1, min(image.size) // min_side) if min_side is not None else 1
    if factor > 1:  # what the draft left to do, by a whole factor (reduce takes no 1-bit or
        if image.mode in ("1", "P"):  # palette images: made grey or RGBA first)
            image = image.convert("L" if image.mode == "1" else "RGBA")
        image = image.reduce(factor)
    oriented = image
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # a phone photo's rotation
        oriented = ImageOps.exif_transpose(image)
    if oriented.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in oriented.info:
        rgba = oriented.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, rgba).convert("RGB")
    else:
        rgb = oriented.convert("RGB")
    return np.array(rgb, dtype=np.uint8)  # (H, W, 3), writable


def _not_an_accepted_image(data: bytes) -> InvalidRequestError:
    text_head = data[:256].lstrip()  # an SVG may start with blanks
    binary = [name for at, magic, name in _OTHER_IMAGE_MAGIC if data[at : at + len(magic)] == magic]
    text = [name for magic, name in _OTHER_TEXT_IMAGE_MAGIC if text_head.startswith(magic)]
    if binary or text:
        return InvalidRequestError(
            f"{(binary + text)[0]} images are not supported; send PNG, JPEG, WebP or GIF",
            code=UNSUPPORTED_IMAGE_FORMAT,
        )
    return InvalidRequestError("the data is not a PNG, JPEG, WebP or GIF image", code=INVALID_IMAGE)


def _too_large(size: int, limits: ImageLimits) -> InvalidRequestError:
    return InvalidRequestError(
        f"the image is about {size} bytes; at most {limits.max_bytes} are accepted",
        code=IMAGE_TOO_LARGE,
    )


__all__ = [
    "DecodedImage",
    "ImageLimits",
    "decode_image",
    "decode_image_bytes",
    "decode_image_url",
    "parse_data_url",
]
