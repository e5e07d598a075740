"""Media for the fuzzer (``bench.fuzz``): images and audio as hypothesis strategies of bytes,
valid, truncated, corrupt, garbage behind a real magic number, or with headers whose declared
sizes are huge (a 2^31-pixel-wide PNG, a WAV whose data chunk claims 4 GiB), and the data URLs
and base64 texts they travel in, well-formed or not.

Headers are packed by hand (``struct``), so a field can lie; the valid images come from Pillow,
the valid WAV files from the same packer with honest fields. Everything is small: a valid image
is at most 48x48, a valid sound at most a quarter of a second (the server transcribes it).
"""

from __future__ import annotations

import base64
import io
import math
import struct
import zlib

from hypothesis import strategies as st

SAMPLE_RATE = 16_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Magic numbers of image formats, accepted or not, that garbage is appended to.
IMAGE_MAGIC = (
    PNG_MAGIC, b"\xff\xd8\xff\xe0", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"BM", b"II*\x00", b"MM\x00*", b"<svg", b"<?xml", b"\x00\x00\x00\x0cjP  ", b"\x00\x00\x00\x18ftypheic",
)  # fmt: skip
#: Magic numbers of audio containers: RIFF/WAVE, Ogg, WebM (EBML), MP3 (ID3, frame sync), FLAC.
AUDIO_MAGIC = (b"RIFF\xff\xff\xff\xffWAVE", b"OggS\x00\x02", b"\x1aE\xdf\xa3", b"ID3\x03\x00", b"\xff\xfb\x90\x00", b"fLaC")  # fmt: skip


# -- images ----------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_header(width: int, height: int, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG signature and an IHDR chunk (with a correct CRC) declaring ``width`` x ``height``."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return PNG_MAGIC + _png_chunk(b"IHDR", ihdr)


def jpeg_header(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 declaring ``width`` x ``height`` (3 components), EOI: no scan."""
    components = b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + components
    return b"\xff\xd8" + sof + b"\xff\xd9"


def gif_header(width: int, height: int) -> bytes:
    """A GIF89a logical screen of ``width`` x ``height``, a global palette, no image."""
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00" * 6 + b";"


def webp_header(width: int, height: int) -> bytes:
    """An extended WebP (VP8X) whose canvas is ``width`` x ``height`` (up to 2^24 each)."""
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + canvas
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def encoded_image(fmt: str, width: int, height: int, mode: str, color: int) -> bytes:
    """A real ``width`` x ``height`` image of one colour, encoded by Pillow."""
    from PIL import Image

    rgb = (color >> 16 & 255, color >> 8 & 255, color & 255)
    image = Image.new("RGB", (width, height), rgb)
    for candidate in (image.convert(mode), image):  # a mode the format cannot hold: RGB
        out = io.BytesIO()
        try:
            candidate.save(out, format=fmt)
        except (OSError, ValueError, KeyError):
            continue
        return out.getvalue()
    raise ValueError(f"Pillow cannot write {fmt}")


def _cut(data: bytes, percent: int) -> bytes:
    return data[: len(data) * percent // 100]


def _flip(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    buffer = bytearray(data)
    for at, value in edits:
        if buffer:
            buffer[at % len(buffer)] = value
    return bytes(buffer)


_formats = st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
_modes = st.sampled_from(["RGB", "RGBA", "L", "P", "LA"])
_colors = st.integers(0, 2**24 - 1)
#: Small, or a thin strip up to the longest side allowed and past it (one colour: few bytes).
_sizes = st.tuples(st.integers(1, 48), st.integers(1, 48)) | st.tuples(
    st.sampled_from([1000, 8192, 8193]), st.integers(1, 3)
).flatmap(lambda size: st.sampled_from([size, size[::-1]]))
valid_images = st.builds(
    lambda fmt, size, mode, color: encoded_image(fmt, *size, mode, color),
    _formats, _sizes, _modes, _colors,
)  # fmt: skip
_huge = st.integers(0, 2**31 - 1) | st.sampled_from([0, 1, 8193, 65_535, 2**31 - 1])
huge_declared_images = st.one_of(
    st.builds(png_header, _huge, _huge, st.sampled_from([1, 8, 16, 3]), st.sampled_from([0, 2, 3, 6, 7])),
    st.builds(jpeg_header, st.integers(0, 65_535), st.integers(0, 65_535)),
    st.builds(gif_header, st.integers(0, 65_535), st.integers(0, 65_535)),
    st.builds(webp_header, st.integers(1, 2**24), st.integers(1, 2**24)),
)  # fmt: skip
image_bytes = st.one_of(
    valid_images,
    huge_declared_images,
    st.builds(_cut, valid_images, st.integers(0, 99)),  # truncated
    st.builds(_flip, valid_images, st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=8)),
    st.builds(bytes.__add__, st.sampled_from(IMAGE_MAGIC), st.binary(max_size=256)),  # garbage behind a magic
    st.builds(bytes.__add__, huge_declared_images, st.binary(max_size=128)),
    st.binary(max_size=256),
)  # fmt: skip


# -- base64 and data URLs --------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _mangle(text: str, how: str, at: int) -> str:
    """Well-formed base64 made wrong one way: no padding, a foreign character, the URL-safe
    alphabet, line breaks (which the image path allows), a blank inside."""
    at = at % (len(text) + 1)
    return {
        "unpadded": text.rstrip("="),
        "foreign": text[:at] + "*" + text[at:],
        "urlsafe": text.replace("+", "-").replace("/", "_"),
        "lines": "\n".join(text[i : i + 76] for i in range(0, len(text), 76)),
        "blank": text[:at] + " " + text[at:],
        "pad": text + "==",
    }[how]


_mangled = st.builds(
    _mangle,
    st.builds(b64, st.binary(max_size=64)) | st.builds(b64, image_bytes),
    st.sampled_from(["unpadded", "foreign", "urlsafe", "lines", "blank", "pad"]),
    st.integers(0, 1000),
)
_mimes = st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml", "text/plain", "", "IMAGE/PNG", "application/octet-stream"])  # fmt: skip
_params = st.sampled_from([";base64", "", ";charset=utf-8;base64", ";base64;base64", "; base64 ", ";name=a.png"])


def data_url(mime: str, params: str, payload: str) -> str:
    return f"data:{mime}{params},{payload}"


image_urls = st.one_of(
    st.builds(data_url, st.just("image/png"), st.just(";base64"), st.builds(b64, image_bytes)),
    st.builds(data_url, _mimes, _params, st.builds(b64, image_bytes)),
    st.builds(data_url, _mimes, _params, _mangled),
    st.sampled_from(["https://example.com/cat.png", "http://127.0.0.1:6379/", "HTTP://x", "file:///etc/passwd", "data:", "data:,", "data:image/png;base64,"]),
    st.text(max_size=64),
)  # fmt: skip


# -- audio -----------------------------------------------------------------------------------------


def tone(frequency: float, amplitude: float, samples: int) -> bytes:
    """PCM16 little-endian mono of a sine at 16 kHz."""
    values = (int(amplitude * 32767 * math.sin(2 * math.pi * frequency * i / SAMPLE_RATE)) for i in range(samples))
    return struct.pack(f"<{samples}h", *values)  # fmt: skip


def wav_file(
    data: bytes, *, channels: int = 1, rate: int = SAMPLE_RATE, bits: int = 16, fmt: int = 1,
    riff_size: int | None = None, data_size: int | None = None,
) -> bytes:  # fmt: skip
    """A RIFF/WAVE file; every header field can be given a value that lies about ``data``."""
    align = channels * max(bits, 8) // 8
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, (rate * align) & 0xFFFFFFFF, align & 0xFFFF, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk
    body += b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body  # fmt: skip


_pcm = st.one_of(
    st.builds(tone, st.floats(50, 4000), st.floats(0, 1), st.integers(0, 4000)),
    st.builds(bytes, st.integers(0, 4000).map(lambda n: 2 * n)),  # silence
    st.binary(max_size=2048),  # noise, odd lengths too
)
#: Raw PCM16 chunks: binary frames and ``input_audio_buffer.append``.
pcm_chunks = _pcm
_u32 = st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF)
valid_wavs = st.builds(
    lambda pcm, rate: wav_file(pcm, rate=rate), _pcm.filter(lambda b: len(b) % 2 == 0), st.sampled_from([8000, 16000, 44100])
)
lying_wavs = st.builds(
    wav_file,
    st.binary(max_size=512),
    channels=st.sampled_from([0, 1, 2, 8, 65_535]),
    rate=st.sampled_from([0, 1, 8000, 16000, 192_000]) | _u32,
    bits=st.sampled_from([0, 1, 7, 8, 16, 24, 32, 64, 65_535]),
    fmt=st.sampled_from([1, 3, 6, 7, 0xFFFE, 0]),
    riff_size=st.none() | _u32,
    data_size=st.none() | _u32,
)
audio_files = st.one_of(
    valid_wavs,
    lying_wavs,
    st.builds(_cut, valid_wavs, st.integers(0, 99)),
    st.builds(bytes.__add__, st.sampled_from(AUDIO_MAGIC), st.binary(max_size=512)),
    st.binary(max_size=512),
)
#: What an ``input_audio`` part or an ``input_audio_buffer.append`` carries as its ``audio``.
audio_texts = st.one_of(
    st.builds(b64, audio_files),
    st.builds(lambda data: "data:audio/wav;base64," + b64(data), audio_files),
    st.builds(_mangle, st.builds(b64, audio_files), st.sampled_from(["unpadded", "foreign", "urlsafe", "blank"]), st.integers(0, 1000)),
    st.text(max_size=32),
)  # fmt: skip
pcm_texts = st.one_of(
    st.builds(b64, pcm_chunks),
    st.builds(lambda data: "data:audio/pcm;base64," + b64(data), pcm_chunks),
    st.builds(lambda data: "data:audio/pcm," + b64(data), pcm_chunks),
    st.builds(_mangle, st.builds(b64, pcm_chunks), st.sampled_from(["unpadded", "foreign", "urlsafe", "blank"]), st.integers(0, 1000)),
    st.text(max_size=32),
)  # fmt: skip
