"""The one exception type for bad user input.

The CLI turns an ``OloraError`` into a single line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""


class OloraError(Exception):
    """Bad input from the user: a message that names the thing, the value and the fix."""
