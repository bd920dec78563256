"""One error type for every problem with a data source: the CLI prints its message on one line and exits 2."""


class DataError(Exception):
    """A data source is missing, damaged or malformed. The message names the file and what to do."""
