"""Errors that mean "the input is wrong", which commands print as one line instead of a traceback."""


class InputError(ValueError):
    """Bad user input: a file, a config field or a flag. The message names it and says what to do."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its type's name), cut to `limit` characters, to
    quote a library's multi-line error inside a one-line message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
