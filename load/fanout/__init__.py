"""Websocket fan-out benchmark: `python -m load.fanout --help`."""
