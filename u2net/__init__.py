"""The ``u2net`` command: one entry point with a subcommand for each of the toolkit's ``python -m`` tools."""
