"""The one failure every shared-state operation may raise."""


class StateUnavailableError(Exception):
    """The backend did not answer in time or is down."""
