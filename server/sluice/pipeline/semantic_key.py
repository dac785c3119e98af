"""What the semantic cache compares: a call's text, and its partition.

A call may be answered by a stored answer to a similar text only when
everything else about the two calls is equal. That is the partition: the
digest of the exact cache key's document (cache_key.py: route, model,
generation parameters, tools, tool choice, response format, namespace...)
of the request with its compared text taken out, plus the scope and the
embeddings route. By scope:

- `last_user_message`: the text of the last message, which must be the
  user's and all text; the earlier messages (system prompt included) stay in
  the partition exactly, so "yes, do it" in two conversations never match.
- `conversation`: every message's text, each line led by its role; the
  system messages stay in the partition exactly, the others are taken out.
  Every message must be all text (no image, tool call or tool result).

A completion's prompt is its text. A call that fits neither has no query:
the semantic cache is skipped (the exact cache still answers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from sluice.config.schema import SemanticCacheConfig
from sluice.domain import ChatRequest, CompletionRequest, Message, Role, TextPart
from sluice.pipeline.cache_key import digest, key_document
from sluice.pipeline.call import Call

Scope = Literal["last_user_message", "conversation"]


@dataclass(frozen=True, slots=True)
class SemanticQuery:
    partition: str
    text: str  # what is embedded


def semantic_query(call: Call, config: SemanticCacheConfig) -> SemanticQuery | None:
    """`call`'s query, or None when the semantic cache does not apply to it."""
    request = call.request
    rest: ChatRequest | CompletionRequest
    if isinstance(request, CompletionRequest):
        text, rest = request.prompt, dataclasses.replace(request, prompt="")
    elif isinstance(request, ChatRequest):
        split = _split(request.messages, config.scope)
        if split is None:
            return None
        text, kept = split
        rest = dataclasses.replace(request, messages=kept)
    else:
        return None
    if not text.strip():
        return None
    document = key_document(call, rest)
    document["semantic"] = {"scope": config.scope, "embeddings_route": config.embeddings_route}
    return SemanticQuery(digest(document), text)


def _split(messages: tuple[Message, ...], scope: Scope) -> tuple[str, tuple[Message, ...]] | None:
    """The compared text and the messages kept exactly; None if they cannot be split."""
    if scope == "last_user_message":
        if not messages or messages[-1].role != Role.USER or not _all_text(messages[-1]):
            return None
        last = messages[-1]
        # Its place and name stay: only its text is compared by similarity.
        return last.text, (*messages[:-1], Message(Role.USER, (), last.name))
    if not all(_all_text(message) for message in messages):
        return None
    system = tuple(message for message in messages if message.role == Role.SYSTEM)
    text = "\n".join(
        f"{message.role.value}: {message.text}"
        for message in messages
        if message.role != Role.SYSTEM
    )
    return text, system


def _all_text(message: Message) -> bool:
    return all(isinstance(part, TextPart) for part in message.parts)
