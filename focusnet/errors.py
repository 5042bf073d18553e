"""User-facing errors.

Anything a user can cause (a bad flag, a missing file, a wrong checkpoint) raises
`FocusNetError` with one line that says what is wrong and how to fix it. The CLI
prints that line and exits with code 2, never a traceback.
"""


class FocusNetError(Exception):
    """A problem the user can fix; the message is one actionable line."""

    exit_code = 2
