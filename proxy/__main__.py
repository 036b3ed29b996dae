"""``python -m proxy`` is the ``ingest-proxy`` command."""

from proxy.cli.main import main

raise SystemExit(main())
