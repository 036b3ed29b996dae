"""``python -m proxy`` is the ``ingest-proxy`` command."""

from proxy.cli import main

raise SystemExit(main())
