"""The one error every verb answers with: a code the control plane understands, the message, and
the failing command's stderr and argv; and the exit statuses."""


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_SPEC = 2


class HostsideError(Exception):
    def __init__(self, code, message, *, stderr="", argv=None, details=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.stderr = stderr
        self.argv = argv or []
        self.details = details or {}

    def as_dict(self):
        error = {"code": self.code, "message": self.message, "stderr": self.stderr, "argv": self.argv}
        error.update(self.details)
        return error


def bad_spec(message):
    return HostsideError("bad_spec", message)
