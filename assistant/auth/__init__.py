"""Who is asking: keys (``keys``), the caller they make (``principal``), browser client secrets
and signed user identities (``tokens``), the server's own secret (``secret``) and the
``Authenticator`` that turns a request's credentials into a ``Principal`` (``authenticator``).
Transport-agnostic: the server reads the credentials off HTTP and WebSocket handshakes."""
