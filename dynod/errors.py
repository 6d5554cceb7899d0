"""The one error type a user ever sees: a sentence saying what was wrong and what to do."""


class UserError(Exception):
    """Bad input or a refused request. ``str(err)`` is the single line shown to the user.

    ``status`` is the HTTP status the API answers with; ``code`` a stable machine name
    (Heroku's Platform API style ids: "not_found", "invalid_params", ...).
    """

    def __init__(self, message: str, *, status: int = 422, code: str = "invalid_params") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NotFound(UserError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=404, code="not_found")


class Conflict(UserError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=409, code="conflict")
