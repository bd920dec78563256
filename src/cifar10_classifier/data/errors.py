"""One error type for every problem with a data source: the CLI prints its message on one line and exits 2."""

from cifar10_classifier.errors import UserError


class DataError(UserError):
    """A data source is missing, damaged or malformed. The message names the file and what to do."""

    def __init__(self, message: str):
        # Library messages embedded in ours can span lines (tarfile lists every method it tried): keep one line.
        super().__init__(" ".join(str(message).split()))
