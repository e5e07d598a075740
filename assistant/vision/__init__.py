"""Vision: image decoding and its limits (``images``) and the image pipeline, encoder -> projector
-> embedding cache (``pipeline``)."""
