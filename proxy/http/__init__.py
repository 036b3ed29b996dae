"""HTTP/1.1 on the wire: ``ingress_protocol`` (the ingress listener's protocol, its
framing, limits and deadlines), ``admin_protocol`` (the admin listener's guarded
protocol), ``request_target`` (the request line's target) and ``responses`` (errors as
JSON problem responses, the canned ones included)."""
