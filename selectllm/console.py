"""The project's own terminal output: one stderr console shared by every stage.

While the CLI runs quiet (the default, see ``logs.py``) file descriptors 1 and 2 go to the run's
engine log, and this console writes to the terminal the process started with.
"""

from rich.console import Console

# soft_wrap: a long stage line stays one line in a pipe or a CI log (no hard wrap at 80 columns)
console = Console(stderr=True, soft_wrap=True)


def say(message: str) -> None:
    """One plain line for the user (no markup), wherever the console writes."""
    console.print(message, markup=False, highlight=False)
