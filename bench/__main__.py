"""``python -m bench [--quick] [--json PATH] ...``: the same as ``assistant bench``."""

from bench.run import main

raise SystemExit(main())
