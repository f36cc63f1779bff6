"""Errors shared by every app."""


class Refused(Exception):
    """A request that breaks a business rule or carries bad input; nothing was written.

    The CLI turns it into exit code 1, the admin into an error message.
    """
