"""From a request to an Envelope: ``pipeline`` (routing, checks, the 202 and its record,
shared by the HTTP/1.1 protocol and the ASGI app), ``headers`` (what is delivered, and
the control headers), ``forwarded`` (whose ``X-Forwarded-*`` count)."""
