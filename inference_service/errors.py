"""Errors raised below the HTTP layer (the inference code, the model providers), with no HTTP in them;
routes/error_handlers.py answers them as JSON."""


class InputError(ValueError):
    """A client mistake: answered with a 4xx and a message naming the field, never a 5xx."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


class NotReady(Exception):
    """The model is still loading (or failed to): 503 with a reason."""
