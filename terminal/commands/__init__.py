"""Subcommands of `possim`, one module each."""
