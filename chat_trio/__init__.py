"""chat_trio: a self-hostable chat room server on Trio, h11 and sqlite."""

__version__ = "0.1.0"
