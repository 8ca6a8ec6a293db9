"""Load tools for chat_trio (run from the repository root, e.g. `python -m load.fanout`)."""
