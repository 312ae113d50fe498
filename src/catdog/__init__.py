"""catdog: the cat-vs-dog journey of the deep-learning course as a reproducible DVC + MLflow pipeline."""


class CatdogError(Exception):
    """A problem the user can fix (bad params, unusable data); stages print it as one line and exit 1."""
