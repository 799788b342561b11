"""Exceptions the tracker and backends raise; each message says what was wrong and what is expected."""


class Sam2RosError(Exception):
    """Base class of sam2_ros errors."""


class TrackerInputError(Sam2RosError, ValueError):
    """A bad argument to a tracker method. The tracker's state is left untouched."""


class EngineError(Sam2RosError, RuntimeError):
    """A missing, incomplete or mismatched engine directory / manifest."""
