"""The one exception type for user mistakes: the CLI prints it as one line, no traceback."""


class JaxlmError(Exception):
    """A problem with the user's input (config, paths, data) rather than a bug in jaxlm."""
