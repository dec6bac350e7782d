"""The one exception type for user mistakes: the CLI prints it as one line, no traceback."""


class JaxlmError(Exception):
    """A problem with the user's input (config, paths, data) rather than a bug in jaxlm."""


class NonFiniteError(JaxlmError):
    """Training produced a non-finite loss or gradient norm and `train.nonfinite=halt`, or
    `train.nonfinite_patience` consecutive ones (`train.nonfinite=skip`)."""
