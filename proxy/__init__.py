"""ingest-proxy: accept any HTTP request, persist it as a task, answer 202, deliver it later.

Public API: :func:`create_app` builds the ingress application for a :class:`Settings`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from proxy.app import create_admin_app, create_app
from proxy.config import Settings, load_settings

__all__ = ["Settings", "__version__", "create_admin_app", "create_app", "load_settings"]
