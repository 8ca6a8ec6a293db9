"""Passwords, tokens and rate limits."""
