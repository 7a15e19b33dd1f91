"""Thin typer commands: parse options, call the library, print a rich summary."""
