"""The errors a predict answers with that are nobody's fault on the server: exceptions with no HTTP in them, so
the inference code can raise them; routes/error_handlers.py turns them into JSON answers."""


class InputError(ValueError):
    """A client mistake: answered with a 4xx and a message naming the field, never a 5xx."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


class NotReady(Exception):
    """The model is still loading (or failed to): 503 with a reason."""
