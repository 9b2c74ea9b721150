"""The one exception family of the package.

    >>> from slsa_provenance.errors import InputError
    >>> err = InputError("drop folder /x does not exist", "pass --drop with the folder to attest")
    >>> err.diagnostics()
    'drop folder /x does not exist: pass --drop with the folder to attest'

Every error carries what is wrong and what to do about it; `cli.py` prints `diagnostics()` and
exits with `exit_code` (1 failed, 2 usage or bad input).
"""

from __future__ import annotations


class Error(Exception):
    """An operation failed; `remedy` says what the user can do."""

    exit_code = 1

    def __init__(self, message: str, remedy: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __reduce__(self) -> tuple[type[Error], tuple[str, str]]:  # keeps the remedy across processes
        return type(self), (self.message, self.remedy)

    def diagnostics(self) -> str:
        return f"{self.message}: {self.remedy}" if self.remedy else self.message


class InputError(Error):
    """The user's input (options, files, variables, keys) is unusable."""

    exit_code = 2


class VerificationError(Error):
    """Provenance does not verify; `check` names the failed check, e.g. '(5) builder.id'."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.detail = message

    def __reduce__(self) -> tuple[type[Error], tuple[str, str]]:
        return type(self), (self.check, self.detail)
