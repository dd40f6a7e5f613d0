"""The one exception type for mistakes in a user's input."""


class UserError(Exception):
    """A bad value supplied by the user (a config value, a path, a name).

    The CLI reports it as a single line on stderr and exits with code 2, with no
    traceback. Its message names the bad value and what would be accepted.
    """
