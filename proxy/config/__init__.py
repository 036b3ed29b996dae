"""The proxy's configuration: ``settings`` (the frozen dataclasses and their checks),
``loading`` (file, environment and flags, and the dict -> Settings builder),
``durations`` (the duration syntax). The bottom layer: it imports nothing of the proxy
but the error tree and Cloud Tasks' limits (``proxy.limits``).
"""
