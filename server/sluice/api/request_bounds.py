"""The bounds one request is held to: the operator's (`server.request_limits`)
and the fixed ones below. requests.py checks them as it converts a request,
before any work starts; a request over a bound is INVALID_ARGUMENT naming
the field and the bound."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sluice.config.schema import RequestLimits
from sluice.errors import invalid_argument

# EmbedRequest.dimensions: a contract, beyond any model's vectors.
MAX_DIMENSIONS = 65_536
# Nesting of a tool's JSON schema or a tool call's arguments, in objects and arrays.
MAX_JSON_DEPTH = 32
# Characters of a name or id: a message's name, tool names, tool call ids, media types.
MAX_NAME_CHARS = 256

_KEY = "server.request_limits"


class RequestBounds:
    """The checks of one request against `limits`; it sums the request's
    text as the conversion meets it."""

    __slots__ = ("_text_chars", "limits")

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self._text_chars = 0

    def count(self, field: str, count: int, limit: int, key: str) -> None:
        """`field` holds `count` entries; `limit` is `limits.<key>`."""
        if count > limit:
            raise invalid_argument(
                field, f"{field} has {count} entries, over the limit of {limit} ({_KEY}.{key})"
            )

    def text(self, field: str, text: str) -> None:
        self._text_chars += len(text)
        limit = self.limits.max_text_chars
        if self._text_chars > limit:
            raise invalid_argument(
                field,
                f"the request's text passes {limit} characters at {field} ({_KEY}.max_text_chars)",
            )

    def name(self, field: str, name: str) -> None:
        if len(name) > MAX_NAME_CHARS:
            raise invalid_argument(
                field, f"{field} is {len(name)} characters, over the limit of {MAX_NAME_CHARS}"
            )

    def size(self, field: str, size: int, limit: int, key: str) -> None:
        """`field` is `size` bytes; `limit` is `limits.<key>`."""
        if size > limit:
            raise invalid_argument(
                field, f"{field} is {size} bytes, over the limit of {limit} ({_KEY}.{key})"
            )

    def labels(self, labels: Mapping[str, str]) -> None:
        self.count("labels", len(labels), self.limits.max_labels, "max_labels")
        limit = self.limits.max_label_chars
        for key, value in labels.items():
            if len(key) > limit or len(value) > limit:
                raise invalid_argument(
                    "labels",
                    f"a label's key or value is over {limit} characters ({_KEY}.max_label_chars)",
                )

    def variables(self, variables: Mapping[str, str]) -> None:
        """A chat's variables: their names are names, their values text."""
        self.count("variables", len(variables), self.limits.max_variables, "max_variables")
        for name, value in variables.items():
            field = f"variables.{name[:MAX_NAME_CHARS]}"
            self.name(field, name)
            self.text(field, value)

    def dimensions(self, dimensions: int, inputs: int) -> None:
        if not 0 < dimensions <= MAX_DIMENSIONS:
            raise invalid_argument(
                "dimensions", f"dimensions must be between 1 and {MAX_DIMENSIONS}, got {dimensions}"
            )
        limit = self.limits.max_embedding_values
        if inputs * dimensions > limit:
            raise invalid_argument(
                "dimensions",
                f"{inputs} inputs of {dimensions} dimensions are {inputs * dimensions} values, "
                f"over the limit of {limit} ({_KEY}.max_embedding_values)",
            )

    @staticmethod
    def json_depth(field: str, value: Any) -> None:
        """`value` (parsed JSON) nests at most MAX_JSON_DEPTH objects and arrays."""
        depth, level = 0, [value]
        while level := [v for v in level if isinstance(v, dict | list)]:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise invalid_argument(
                    field, f"{field} nests deeper than {MAX_JSON_DEPTH} objects and arrays"
                )
            level = [
                child
                for container in level
                for child in (container.values() if isinstance(container, dict) else container)
            ]
