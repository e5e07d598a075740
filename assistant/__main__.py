"""``python -m assistant ...``: the ``assistant`` command."""

from assistant.cli import main

raise SystemExit(main())
