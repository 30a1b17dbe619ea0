"""Errors the CLI turns into one line on stderr and exit code 2."""
from .recipe import RecipeError
from .store import StoreError


class StageError(RuntimeError):
    """A stage cannot proceed (missing input, NaN loss, ...); str() is the user's line."""


USER_ERRORS = (RecipeError, StoreError, StageError)
