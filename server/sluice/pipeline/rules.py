"""Rules: conditions on a call that send it to one target or to another route.

A route's rules are tried in order; the first whose every given condition
holds decides (a rule with an empty `when` always holds):

- `metadata`: every `k: v` equals the request metadata (keys compared in
  lower case, as gRPC delivers them; values exactly);
- `key`: the caller's API key has this name;
- `matches`: the regular expression is found (`re.search`) in the call's text;
- `keywords`: any of them is in the call's text as a whole word or phrase,
  ignoring case;
- `min_prompt_tokens` / `max_prompt_tokens`: the limits stage's estimate of
  the input (characters / 4) is at least / at most this.

The call's text is every message part that carries text (text, tool call
arguments, tool results: a PII pattern must see all of them), one per line;
a completion's prompt and suffix; an embedding's inputs. It is built once
per call, only when a rule looks at it. Patterns are compiled once and cached
by their text, so routes sharing a pattern, and reloads, reuse them.

Where rules act: Routing follows a `route:` rule of the route the caller
named (routing.py); `order_targets` honours a `target:` rule (selection.py).
"""

from __future__ import annotations

import functools
import re

from sluice.config.schema import RuleCondition, RuleConfig
from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Part,
    Request,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from sluice.pipeline.call import Call
from sluice.pipeline.limits import estimate_tokens
from sluice.routes import Route

# Distinct patterns across all routes; far more than any config holds.
_PATTERN_CACHE_SIZE = 1024


def match_rule(route: Route, call: Call, *, redirects: bool = True) -> RuleConfig | None:
    """The first of the route's rules that holds for `call`; with
    `redirects=False`, rules that send to another route are passed over."""
    if not route.rules:
        return None
    facts = _Facts(call.request)
    for rule in route.rules:
        if (redirects or rule.route is None) and _holds(rule.when, call, facts):
            return rule
    return None


def redirect(route: Route, call: Call) -> str | None:
    """The route `call` is sent to by the first of the route's rules that
    holds, when that rule names a route."""
    if all(rule.route is None for rule in route.rules):
        # Target rules are for order_targets: do not evaluate them twice.
        return None
    rule = match_rule(route, call)
    return None if rule is None else rule.route


def _holds(when: RuleCondition, call: Call, facts: _Facts) -> bool:
    # Cheap conditions first: most calls fail one before the text is built.
    if when.metadata is not None and any(
        call.headers.get(key.lower()) != value for key, value in when.metadata.items()
    ):
        return False
    if when.key is not None and (call.caller is None or call.caller.name != when.key):
        return False
    if when.min_prompt_tokens is not None and facts.prompt_tokens < when.min_prompt_tokens:
        return False
    if when.max_prompt_tokens is not None and facts.prompt_tokens > when.max_prompt_tokens:
        return False
    if when.matches is not None and not _pattern(when.matches).search(facts.text):
        return False
    return when.keywords is None or bool(_keywords(tuple(when.keywords)).search(facts.text))


class _Facts:
    """What rules read from one request, each computed on first use."""

    def __init__(self, request: Request) -> None:
        self._request = request

    @functools.cached_property
    def text(self) -> str:
        request = self._request
        if isinstance(request, ChatRequest):
            return "\n".join(
                text
                for message in request.messages
                for part in message.parts
                if (text := _part_text(part))
            )
        if isinstance(request, CompletionRequest):
            return f"{request.prompt}\n{request.suffix}" if request.suffix else request.prompt
        return "\n".join(request.inputs)

    @functools.cached_property
    def prompt_tokens(self) -> int:
        request = self._request
        # The limits estimate counts the output allowance too; a prompt does not.
        allowance = 0 if isinstance(request, EmbeddingRequest) else request.generation.max_tokens
        return estimate_tokens(request) - (allowance or 0)


def _part_text(part: Part) -> str:
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, ToolCallPart):
        return part.arguments
    if isinstance(part, ToolResultPart):
        return part.content
    return ""  # images


@functools.lru_cache(maxsize=_PATTERN_CACHE_SIZE)
def _pattern(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


@functools.lru_cache(maxsize=_PATTERN_CACHE_SIZE)
def _keywords(words: tuple[str, ...]) -> re.Pattern[str]:
    # Lookarounds, not \b: a keyword may begin or end with a non-word
    # character ("C++", "$ssn") and must still stand alone.
    alternatives = "|".join(re.escape(word) for word in words if word)
    if not alternatives:
        return re.compile(r"(?!)")  # any of no words: never
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
