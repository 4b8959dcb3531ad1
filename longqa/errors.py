"""The error types the CLI turns into one-line messages and documented exit codes (cli.md)."""


class LongQAError(Exception):
    """A failure we can explain in one line. exit_code 2: bad usage or input; 1: runtime failure."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(LongQAError):
    """Bad input: missing file, empty text, not a state file, wrong model... (exit 2)."""


class StateError(InputError):
    """A state file that is not ours, is damaged, or belongs to another model (exit 2)."""


class RuntimeFailure(LongQAError):
    """The input was fine but we could not finish: unreadable file, disk full, out of memory (exit 1)."""

    exit_code = 1
