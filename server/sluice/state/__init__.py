"""Shared state: the response cache and the counters behind limits and
budgets, in process (`memory`) or shared by replicas (`redis`).

Both backends implement `SharedState`; a backend that cannot answer in time
raises `StateUnavailableError`, and each feature decides what that means by its
route's `failure_policy`.
"""

from sluice.state.base import ResponseCacheStore, SharedState, StateUnavailableError

__all__ = ["ResponseCacheStore", "SharedState", "StateUnavailableError"]
