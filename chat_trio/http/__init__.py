"""HTTP/1.1 on Trio and h11: listener, per-connection loop, router, request/response values."""
