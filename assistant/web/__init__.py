"""The chat widget's static files, served by ``assistant.server.web``: ``widget/`` (its sources,
CSS and the mic's AudioWorklet), ``vendor/`` (marked and DOMPurify from the npm registry, with
their licences) and ``index.html`` (the demo page)."""
