"""One error type for problems a user can fix (bad data, bad params, missing weights)."""


class PipelineError(Exception):
    """A problem in the user's input, reported as one line naming the file or key and the fix.

    Scripts catch it and print ``ERROR: <message>`` instead of a traceback; anything else
    is a bug and keeps its traceback.
    """


def listing(items: list[str], limit: int = 10) -> str:
    """``a; b; c; and N more``: the first ``limit`` items of a one-line error message."""
    shown = "; ".join(items[:limit])
    if len(items) > limit:
        shown += f"; and {len(items) - limit} more"
    return shown
