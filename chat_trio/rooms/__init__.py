"""Live delivery: the hub that fans committed messages out to websockets and long-polls."""
