"""User-facing errors: each message names what is wrong and where (file, row, field, artifact)."""


class RaylrecError(Exception):
    """An error caused by input or configuration, reported to the user without a traceback."""


class DataError(RaylrecError):
    """Bad, missing or inconsistent input data."""


class ArtifactError(RaylrecError):
    """A pipeline artifact is missing or does not match what the stage expects."""
