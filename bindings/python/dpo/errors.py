"""Errors raised by the library: one subclass of DPOError per dpo_status, carrying its message."""

__all__ = [
    "DPOError", "InvalidArgumentError", "DPOIOError", "FormatError", "OutOfMemoryError",
    "NumericError", "WrongStateError", "InternalError", "BufferTooSmallError",
]


class DPOError(Exception):
    """A failed library call. ``status`` is the dpo_status code, ``message`` the library's text
    (it names the argument and the value at fault)."""

    status = -1

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class InvalidArgumentError(DPOError, ValueError):
    """DPO_ERR_INVALID_ARGUMENT: a bad value, batch, name, handle or struct size."""
    status = 1


class DPOIOError(DPOError, OSError):
    """DPO_ERR_IO: a file or directory could not be read or written."""
    status = 2


class FormatError(DPOError, ValueError):
    """DPO_ERR_FORMAT: a file's content is malformed (config.json, safetensors, checkpoint)."""
    status = 3


class OutOfMemoryError(DPOError, MemoryError):
    """DPO_ERR_OUT_OF_MEMORY: the request cannot fit in the machine's memory."""
    status = 4


class NumericError(DPOError, ArithmeticError):
    """DPO_ERR_NUMERIC: a loss or gradient is NaN or infinite (nothing was changed)."""
    status = 5


class WrongStateError(DPOError, RuntimeError):
    """DPO_ERR_WRONG_STATE: the call is not valid now (e.g. nothing accumulated, handle busy)."""
    status = 6


class InternalError(DPOError, RuntimeError):
    """DPO_ERR_INTERNAL: a bug in swift-dpo."""
    status = 7


class BufferTooSmallError(DPOError):
    """DPO_ERR_BUFFER_TOO_SMALL: an output buffer was too small (the bindings size them)."""
    status = 8


_BY_STATUS = {cls.status: cls for cls in (
    InvalidArgumentError, DPOIOError, FormatError, OutOfMemoryError, NumericError, WrongStateError,
    InternalError, BufferTooSmallError)}


def error_for(status, message):
    """The exception for a status code and message."""
    cls = _BY_STATUS.get(status, DPOError)
    return cls(message, status)
