"""A minimal text PDF written by hand (no PDF library writes text): one page per list of lines,
Helvetica 11 pt; pypdf reads the text back. ``python -m tests.support.pdf`` rewrites the test
corpus's ``payments.pdf``."""

from __future__ import annotations

from pathlib import Path


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def text_pdf(pages: list[list[str]], title: str = "") -> bytes:
    objects: list[bytes] = []
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for n, lines in enumerate(pages):
        ops = ["BT", "/F1 11 Tf", "14 TL", "56 780 Td"]
        ops += [f"({_escape(line)}) Tj T*" for line in lines]
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {5 + 2 * n} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    info = len(objects) + 1
    objects.append(f"<< /Title ({_escape(title)}) >>".encode())
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {info} 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()  # fmt: skip
    return bytes(out)


def encrypted_pdf(lines: list[str], password: str = "letmein") -> bytes:
    """A one-page text PDF encrypted with a user password (pypdf writes it)."""
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf([lines]))))
    writer.encrypt(password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


PAYMENTS = [
    [
        "Payments and checkout",
        "",
        "We accept Visa, Mastercard, PayPal and Pebble & Pine gift cards.",
        "Error code E-402 means your bank declined the payment: check the card",
        "details or ask your bank to approve the purchase, then try again.",
        "Error code E-517 means the checkout session timed out after 20 minutes;",
        "your basket is kept, so simply start the checkout again.",
        "You can pay in three interest-free instalments with Klarna on orders over 90 GBP.",
    ],
    [
        "Pine Points loyalty scheme",
        "",
        "Members earn one Pine Point for every pound spent. 100 Pine Points are worth",
        "a 5 GBP voucher at checkout. Points expire 24 months after they were earned.",
        "Promo codes such as SPRING25 cannot be combined with Pine Points vouchers.",
    ],
]


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "data" / "kb" / "payments.pdf"
    target.write_bytes(text_pdf(PAYMENTS, title="Payments and loyalty"))
    print(target)
