"""Domain errors that actions raise. They belong to no interface: the API turns them into 409/422
answers (accounts/api/exceptions.py), the portal into form errors, the admin into messages."""


class Conflict(Exception):
    """The request is valid but collides with current state (pool exhausted, still in use)."""


class Unprocessable(Exception):
    """The request is well formed but cannot be honoured as sent (an idempotency key reused with another body)."""
