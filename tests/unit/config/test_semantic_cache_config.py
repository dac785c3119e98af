"""`cache.semantic`: its names, defaults, and the checks made at load."""

from __future__ import annotations

import pytest

from sluice.config import ConfigError
from sluice.config.loader import parse_config

CONFIG = """\
routes:
  - name: chat
    route_type: llm/v1/chat
    model: {provider: mock}
    cache: {max_entries: 50, semantic: SEMANTIC}
  - name: embed
    route_type: EMBED_TYPE
    model: {provider: mock}
"""


def config_with(semantic: str, embed_type: str = "llm/v1/embeddings") -> str:
    return CONFIG.replace("SEMANTIC", semantic).replace("EMBED_TYPE", embed_type)


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.yaml", {})
    return str(caught.value)


def test_scope_and_max_entries_have_defaults() -> None:
    config = parse_config(config_with("{embeddings_route: embed, threshold: 0.9}"), "gw.yaml", {})
    cache = config.routes[0].cache
    assert cache is not None
    assert cache.semantic is not None
    assert cache.semantic.embeddings_route == "embed"
    assert cache.semantic.threshold == 0.9
    assert cache.semantic.scope == "last_user_message"
    assert cache.semantic.max_entries is None  # the cache's max_entries then


def test_every_key_is_read() -> None:
    semantic = "{embeddings_route: embed, threshold: 1, scope: conversation, max_entries: 7}"
    cache = parse_config(config_with(semantic), "gw.yaml", {}).routes[0].cache
    assert cache is not None
    assert cache.semantic is not None
    assert (cache.semantic.scope, cache.semantic.max_entries) == ("conversation", 7)


@pytest.mark.parametrize(
    ("semantic", "expected"),
    [
        ("{threshold: 0.9}", "embeddings_route: Field required"),
        ("{embeddings_route: embed}", "threshold: Field required"),
        ("{embeddings_route: embed, threshold: 1.5}", "threshold: Input should be less than"),
        ("{embeddings_route: embed, threshold: -0.1}", "threshold: Input should be greater"),
        ("{embeddings_route: embed, threshold: 0.9, scope: all}", "scope: Input should be"),
        ("{embeddings_route: embed, threshold: 0.9, max_entries: 0}", "max_entries: Input"),
        ("{embeddings_route: nowhere, threshold: 0.9}", "must be an llm/v1/embeddings route"),
    ],
)
def test_bad_settings_are_refused_at_load(semantic: str, expected: str) -> None:
    assert expected in problems(config_with(semantic))


def test_the_embeddings_route_must_embed() -> None:
    text = config_with("{embeddings_route: embed, threshold: 0.9}", embed_type="llm/v1/chat")
    assert "'embed' must be an llm/v1/embeddings route of this config" in problems(text)
