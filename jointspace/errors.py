"""User-facing errors.

Anything a user can fix (a wrong path, a bad config key, an unknown name, a
malformed manifest) is raised as :class:`JointspaceError`; the CLI prints its
message on one line and exits with status 2 instead of a traceback.
"""


class JointspaceError(Exception):
    """An error caused by the user's input, with a message that says what to fix."""


class ConfigError(JointspaceError):
    """A config file or value is wrong (unknown key, wrong type, unknown name)."""


class DataError(JointspaceError):
    """A data source is missing, empty, or lacks required columns."""


class BadRowError(DataError):
    """A single row failed validation and the policy is ``fail``."""
