"""Exceptions that the command line turns into one readable message instead of a traceback."""


class MedlnkitError(Exception):
    """Invalid input or setup that the user can fix: the message names the value and the fix."""


class InvalidParadigmError(MedlnkitError, ValueError):
    """A paradigm string that does not name one valid state per module group."""


class DataError(MedlnkitError):
    """A dataset folder, file or record that is missing or does not follow the expected layout."""


class ProfileError(MedlnkitError, ValueError):
    """An unknown profile, or a profile whose model or data is not available on this machine."""
