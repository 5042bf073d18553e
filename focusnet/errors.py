"""User-facing errors.

Anything a user can cause (a bad flag, a missing file, a wrong checkpoint) raises
`FocusNetError` with one line that says what is wrong and how to fix it. The CLI
prints that line and exits with code 2, never a traceback. An error every torchrun
process raises alike (`shared`) is printed by rank 0 alone.
"""


class FocusNetError(Exception):
    """A problem the user can fix; the message is one actionable line."""

    exit_code = 2
    shared = False  # every torchrun process raised it alike: only rank 0 prints it


def shared_error(message: str) -> FocusNetError:
    """An error every torchrun process raises alike (the same decision, or rank 0's error passed
    on): rank 0 prints it, the others stop quietly."""
    error = FocusNetError(message)
    error.shared = True
    return error
