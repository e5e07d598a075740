"""``python -m bench [--quick] [--json PATH] ...``: what ``assistant bench`` runs."""

from bench.run import main

raise SystemExit(main())
