"""Errors that mean "the input is wrong", which commands print as one line instead of a traceback."""


class InputError(ValueError):
    """Bad user input: a file, a config field or a flag. The message names it and says what to do."""
