"""Exceptions the tracker and backends raise; each message says what was wrong and what is expected."""


class Sam2RosError(Exception):
    """Base class of sam2_ros errors."""


class TrackerInputError(Sam2RosError, ValueError):
    """A bad argument to a tracker method. The tracker's state is left untouched."""


class FrameSizeChanged(TrackerInputError):
    """A frame of another size than the tracker's current frames; ``reset()`` before changing resolution."""

    def __init__(self, old_hw: tuple[int, int], new_hw: tuple[int, int]):
        self.old_hw, self.new_hw = tuple(old_hw), tuple(new_hw)
        super().__init__(f"frame size changed from {self.old_hw} to {self.new_hw}; call reset() before changing resolution")


class EngineError(Sam2RosError, RuntimeError):
    """A missing, incomplete or mismatched engine directory / manifest."""


class ImageConversionError(Sam2RosError, ValueError):
    """An image (message, bag record) that cannot be turned into the array the tracker needs."""


class PromptsFileError(Sam2RosError, ValueError):
    """A prompts file (``sam2-ros track --prompts``) that cannot be read; the message names the entry."""
