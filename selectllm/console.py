"""The project's own terminal output: one stderr console shared by every stage."""

from rich.console import Console

console = Console(stderr=True)
