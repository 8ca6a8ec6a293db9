"""Durable state on sqlite: sync code that runs in worker threads, behind an async facade."""
