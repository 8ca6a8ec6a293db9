"""`--workers N`: a supervisor that owns the sqlite writer, and N worker processes that serve."""
