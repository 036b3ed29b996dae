"""The Cloud Tasks delivery relay: token check, forwarding, dead letters (``relay.py``),
the OIDC verification (``verify.py``) and where it listens (``listener.py``)."""
