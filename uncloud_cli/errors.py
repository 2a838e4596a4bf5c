"""Exit codes: scripts can tell a refusal from a failure from a timeout."""

EXIT_OK = 0
EXIT_API = 1               # the API refused or failed the request (4xx/5xx); the message says why
EXIT_USAGE = 2             # wrong command line (click's own code)
EXIT_OPERATION_FAILED = 3  # --wait: the operation ended failed or cancelled
EXIT_TIMEOUT = 4           # --wait ran out of time, or the server did not answer in time
EXIT_CONNECTION = 5        # no server to talk to: not logged in, unreachable, bad URL

EXIT_CODES_HELP = ("Exit codes: 0 ok, 1 API error (4xx/5xx), 2 usage, 3 operation failed (--wait), "
                   "4 timeout, 5 not configured or server unreachable.")


class CLIError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code
