"""catdog: the cat-vs-dog journey of the deep-learning course as a reproducible DVC + MLflow pipeline."""


class CatdogError(Exception):
    """A problem the user can fix (bad params, unusable data); stages print it as one line and exit 1."""


def error_text(error: BaseException) -> str:
    """An exception as the short text reported beside a file that could not be used: "OSError: reason"."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
