"""Errors raised on bad data: each names the file and the record."""


class DataError(ValueError):
    """Bad input data (missing or unreadable image, malformed annotation file)."""
