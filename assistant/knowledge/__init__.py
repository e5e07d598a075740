"""Knowledge bases for a support bot: ingestion (``ingest``), hybrid search (``lexical``,
``search``, ``retriever``), the bot profile (``profile``) and grounded answers (``answer``)."""
