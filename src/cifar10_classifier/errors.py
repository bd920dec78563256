"""The base of every error a user can fix: the CLI catches this one type, prints its message on one line and
exits 2. Each part raises its own subclass: data.DataError, preprocess.ImageDecodeError, inference.ModelLoadError,
runs.RunFolderError (run folders, checkpoints, weights), training.recipes.RecipeError, export.graph.ExportError,
client.ClientError."""


class UserError(Exception):
    """An error the user can fix; the message says what is wrong and what to do."""
