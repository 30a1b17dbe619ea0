"""Errors the CLI turns into one line on stderr and exit code 2. Defined here, imported from here."""


class RecipeError(ValueError):
    """Bad recipe input; str() is the one line the user sees."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key = source, key
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


class StoreError(RuntimeError):
    """A store problem; str() is the one line the user sees."""


class StageError(RuntimeError):
    """A stage cannot proceed (missing input, NaN loss, ...); str() is the user's line."""


USER_ERRORS = (RecipeError, StoreError, StageError)
