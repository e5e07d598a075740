"""Image decoding and validation: the four accepted formats, and every refusal with its stable code.
Images are made here with Pillow; the decompression bomb is a hand-built PNG header (a few dozen
bytes claiming a huge size) that must be refused before any pixel is decoded."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from assistant.errors import InvalidRequestError
from assistant.vision.images import DecodedImage, ImageLimits, decode_image, decode_image_bytes


def encode(pixels: np.ndarray, fmt: str, **save_kw) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **save_kw)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_header(width: int, height: int) -> bytes:
    """A PNG with a real IHDR claiming ``width`` x ``height`` (1-bit grey) and one tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def refused(source, code: str, limits: ImageLimits = ImageLimits()) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        decode_image(source, limits)
    assert info.value.code == code, info.value
    assert info.value.type == "invalid_request_error"
    return info.value


@pytest.fixture
def pixels() -> np.ndarray:
    """A smooth 24 x 40 RGB gradient (lossy formats keep it close)."""
    y, x = np.mgrid[0:24, 0:40]
    return np.stack([x * 6, y * 10, 255 - x * 6], axis=-1).astype(np.uint8)  # (H, W, 3)


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    """Fail the test if Pillow decodes any pixels (``ImageFile.load``)."""

    def load(self):
        raise AssertionError(f"pixels of a {self.size} image were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


# -- accepted ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime", "tolerance"),
    [("PNG", "image/png", 0), ("JPEG", "image/jpeg", 12), ("WEBP", "image/webp", 12)],
)
def test_decodes_a_data_url_to_rgb(pixels, fmt, mime, tolerance):
    data = encode(pixels, fmt, **({"quality": 95} if fmt != "PNG" else {}))
    image = decode_image(data_url(data, mime))
    assert isinstance(image, DecodedImage)
    assert image.pixels.shape == (24, 40, 3) and image.pixels.dtype == np.uint8
    assert (image.width, image.height, image.mime_type) == (40, 24, mime)
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    difference = np.abs(image.pixels.astype(int) - pixels.astype(int))
    assert difference.mean() <= tolerance


def test_gif_gives_its_first_frame_as_rgb():
    red = np.zeros((10, 12, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((10, 12, 3), np.uint8)
    blue[..., 2] = 255
    buffer = io.BytesIO()
    frames = [Image.fromarray(red), Image.fromarray(blue)]
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    data = buffer.getvalue()
    image = decode_image(data)  # raw bytes
    assert image.mime_type == "image/gif"
    assert image.pixels.shape == (10, 12, 3)
    assert (image.pixels == [255, 0, 0]).all()
    assert image.sha256 == hashlib.sha256(data).hexdigest()


def test_grey_and_transparent_images_become_rgb(pixels):
    grey = decode_image(encode(pixels[..., 0], "PNG"))
    assert grey.pixels.shape == (24, 40, 3)
    assert (grey.pixels[..., 0] == pixels[..., 0]).all()
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black: composited on white
    assert (decode_image(encode(rgba, "PNG")).pixels == 255).all()


def test_the_content_decides_the_mime_type(pixels):
    image = decode_image(data_url(encode(pixels, "JPEG"), "image/png"))
    assert image.mime_type == "image/jpeg"


def test_base64_with_line_breaks_is_accepted(pixels):
    data = encode(pixels, "PNG")
    wrapped = base64.encodebytes(data).decode()  # 76-character lines
    assert "\n" in wrapped
    assert decode_image("data:image/png;base64," + wrapped).sha256 == hashlib.sha256(data).hexdigest()


# -- refused ----------------------------------------------------------------------------------------


def test_a_decompression_bomb_is_refused_from_its_header(no_pixel_decoding):
    bomb = png_header(30_000, 30_000)  # 900 MP claimed in ~70 bytes: Pillow's own bomb error
    assert len(bomb) < 100
    refused(data_url(bomb), "image_too_many_pixels")
    refused(bomb, "image_too_many_pixels")


def test_a_header_past_pillows_limit_is_refused_without_a_warning():
    """Found by the fuzzer: each such image printed a DecompressionBombWarning to the server's log
    (a process of its own: pytest records warnings its own way)."""
    code = """if True:
        import struct
        from assistant.vision.images import decode_image_bytes
        sof = b"\\xff\\xc0" + struct.pack(">HBHHB", 17, 8, 10_000, 10_000, 3) + bytes(9)
        try:
            decode_image_bytes(b"\\xff\\xd8" + sof + b"\\xff\\xd9")  # a JPEG of 100 MP, no scan
        except Exception as exc:
            print(exc.code)
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "image_too_many_pixels", done.stderr
    assert "DecompressionBombWarning" not in done.stderr


def test_our_pixel_and_side_limits_are_checked_before_decoding(no_pixel_decoding):
    refused(png_header(7_000, 7_000), "image_too_many_pixels")  # 49 MP: under Pillow's limit
    refused(png_header(9_000, 10), "image_too_many_pixels")  # a side over 8192
    refused(png_header(100, 100), "image_too_many_pixels", ImageLimits(max_pixels=9_999))


def test_a_truncated_png_is_invalid():
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(noise, "PNG")
    refused(data_url(data[: len(data) // 2]), "invalid_image")


def test_a_corrupt_png_is_told_without_quoting_its_bytes():
    """Found by the fuzzer: Pillow's reason quoted the data ("broken PNG file (chunk b'...')")."""
    data = bytearray(encode(np.full((8, 8, 3), 90, dtype=np.uint8), "PNG"))
    data[36] = 0  # the IDAT chunk's length: Pillow reads a chunk type out of the pixels
    error = refused(data_url(bytes(data)), "invalid_image")
    assert "b'" not in error.message and "\\x" not in error.message


def test_text_sent_as_a_png_is_invalid():
    text = b"Hello, this is a plain text file and not an image at all.\n" * 4
    refused(data_url(text, "image/png"), "invalid_image")
    refused(b"", "invalid_image")


def test_too_many_bytes_are_refused(pixels):
    data = encode(pixels, "PNG")
    refused(data_url(data), "image_too_large", ImageLimits(max_bytes=len(data) - 1))
    refused(data, "image_too_large", ImageLimits(max_bytes=len(data) - 1))
    assert decode_image(data_url(data), ImageLimits(max_bytes=len(data))).width == 40


def test_a_huge_data_url_is_refused_before_base64_decoding():
    payload = "A" * (4 * 1024 * 1024)  # 3 MiB once decoded
    refused("data:image/png;base64," + payload, "image_too_large", ImageLimits(max_bytes=1024**2))


@pytest.mark.parametrize("url", ["https://example.com/cat.png", "HTTP://example.com/cat.png"])
def test_http_urls_are_not_fetched(url):
    refused(url, "image_url_not_allowed")


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,iVBORw0KGgo***notbase64***",
        "data:image/png;base64,abc",  # bad padding
        "data:image/png,rawbytes",  # not base64
        "file:///etc/passwd",
        "cat.png",
    ],
)
def test_bad_urls_and_bad_base64_are_invalid_image_urls(url):
    refused(url, "invalid_image_url")


def test_unsupported_formats_are_named(pixels):
    for fmt in ("BMP", "TIFF"):
        error = refused(data_url(encode(pixels, fmt)), "unsupported_image_format")
        assert fmt in str(error)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'
    refused(data_url(svg, "image/svg+xml"), "unsupported_image_format")
    refused(data_url(encode(pixels, "PNG"), "text/plain"), "unsupported_image_format")


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        ImageLimits(max_bytes=0)


def test_raw_bytes_entry_point(pixels):
    image = decode_image_bytes(encode(pixels, "PNG"))
    assert (image.pixels == pixels).all()
