"""The error every command can raise for a mistake the user can fix: the CLI prints its message on one line."""


class UserError(Exception):
    """An error the user can fix; the CLI prints its message without a traceback and exits 2."""
