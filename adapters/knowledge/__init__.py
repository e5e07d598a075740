"""Knowledge base adapters: the Redis store, the MiniLM embedder, the document reader."""
