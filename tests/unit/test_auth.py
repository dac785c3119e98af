"""API keys: identifying callers, constant-time matching, route permissions,
the Authentication stage and the `sluice keys` CLI."""

from __future__ import annotations

import contextlib
import hmac
import io
import subprocess
from collections.abc import AsyncGenerator

import pytest
import yaml

from sluice.auth import KeyRing, hash_key
from sluice.cli import NEW_KEY_PREFIX, main
from sluice.config.schema import AuthConfig
from sluice.domain import ChatRequest, Event, Message, Role, TextDelta, TextPart
from sluice.errors import GatewayError, Status
from sluice.identity import Caller, allows
from sluice.pipeline.auth import authorize
from sluice.pipeline.call import Call, Next

ALICE_KEY = "sk-alice-0123456789"
BOB_KEY = "sk-bob-9876543210"
CAROL_KEY = "sk-carol-5555555555"
AUTH = AuthConfig.model_validate(
    {
        "keys": [
            {"name": "alice", "sha256": hash_key(ALICE_KEY), "routes": ["chat", "embed"]},
            {"name": "bob", "sha256": hash_key(BOB_KEY)},
            {"name": "carol", "sha256": hash_key(CAROL_KEY), "routes": []},
        ]
    }
)
KEYS = KeyRing(AUTH)


def test_auth_off_makes_every_caller_anonymous() -> None:
    keys = KeyRing(None)
    assert keys.identify({}) is None
    assert keys.identify({"authorization": "Bearer anything"}) is None


@pytest.mark.parametrize(
    ("authorization", "name"),
    [
        (f"Bearer {ALICE_KEY}", "alice"),
        (f"bearer {ALICE_KEY}", "alice"),
        (f"BEARER  {BOB_KEY} ", "bob"),
    ],
)
def test_a_configured_key_identifies_its_caller(authorization: str, name: str) -> None:
    caller = KEYS.identify({"authorization": authorization})
    assert caller is not None
    assert caller.name == name


def test_the_caller_carries_its_config() -> None:
    limited = AuthConfig.model_validate(
        {
            "keys": [
                {
                    "name": "k",
                    "sha256": hash_key("key"),
                    "routes": ["a", "b"],
                    "limits": {"requests": "10/minute"},
                    "budget": {"usd": 5, "period": "day"},
                    "namespaces": ["acme", "globex"],
                }
            ]
        }
    )
    config = limited.keys[0]
    assert KeyRing(limited).identify({"authorization": "Bearer key"}) == Caller(
        "k", frozenset({"a", "b"}), config.limits, config.budget, frozenset({"acme", "globex"})
    )
    assert KEYS.identify({"authorization": f"Bearer {BOB_KEY}"}) == Caller("bob", None)


@pytest.mark.parametrize(
    ("headers", "reason", "message"),
    [
        (
            {},
            "MISSING_API_KEY",
            "this gateway needs an API key: send `authorization: Bearer <key>`",
        ),
        (
            {"authorization": ALICE_KEY},
            "MALFORMED_AUTHORIZATION",
            "the authorization metadata must be `Bearer <key>`",
        ),
        (
            {"authorization": f"Basic {ALICE_KEY}"},
            "MALFORMED_AUTHORIZATION",
            "the authorization metadata must be `Bearer <key>`",
        ),
        (
            {"authorization": "Bearer "},
            "MALFORMED_AUTHORIZATION",
            "the authorization metadata must be `Bearer <key>`",
        ),
        ({"authorization": f"Bearer {ALICE_KEY}x"}, "INVALID_API_KEY", "the API key is not valid"),
        ({"authorization": f"Bearer {ALICE_KEY[:-1]}"}, "INVALID_API_KEY", "the API key is not valid"),
        ({"x-api-key": ALICE_KEY}, "MISSING_API_KEY", "this gateway needs an API key: send `authorization: Bearer <key>`"),
    ],
)  # fmt: skip
def test_no_known_key_is_unauthenticated_without_quoting_it(
    headers: dict[str, str], reason: str, message: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        KEYS.identify(headers)
    error = caught.value
    assert (error.status, error.reason, error.message) == (Status.UNAUTHENTICATED, reason, message)
    assert error.metadata == {}
    assert ALICE_KEY[:-1] not in repr(error)


@pytest.mark.parametrize("key", [ALICE_KEY, BOB_KEY, CAROL_KEY, "unknown"])
def test_every_digest_is_compared_in_constant_time(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compare_digest = hmac.compare_digest
    compared: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    with contextlib.suppress(GatewayError):
        KEYS.identify({"authorization": f"Bearer {key}"})
    # Alice's digest is first: a match there still compares the rest.
    presented = bytes.fromhex(hash_key(key))
    assert compared == [(bytes.fromhex(config.sha256), presented) for config in AUTH.keys]


@pytest.mark.parametrize(
    ("caller", "route", "allowed"),
    [
        (None, "chat", True),
        (Caller("bob", None), "chat", True),
        (Caller("bob", None), "anything", True),
        (Caller("alice", frozenset({"chat", "embed"})), "chat", True),
        (Caller("alice", frozenset({"chat", "embed"})), "other", False),
        (Caller("carol", frozenset()), "chat", False),
    ],
)
def test_allows(caller: Caller | None, route: str, allowed: bool) -> None:
    assert allows(caller, route) is allowed


def test_hash_key_is_sha256_hex_of_the_utf8_key() -> None:
    for key in ("abc", ALICE_KEY, "ключ-🔑"):
        expected = subprocess.run(
            ["sha256sum"], input=key.encode(), capture_output=True, check=True
        ).stdout.split()[0]
        assert hash_key(key) == expected.decode()


# The authorize stage (the servicer identified the caller).


async def _answer(call: Call) -> AsyncGenerator[Event, None]:
    yield TextDelta(f"hello {call.caller.name if call.caller else 'anonymous'}")


def _call(route: str, key: str | None, keys: KeyRing = KEYS) -> Call:
    request = ChatRequest(route=route, messages=(Message(Role.USER, (TextPart("hi"),)),))
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    return Call(request, headers, caller=keys.identify(headers))


async def _run(call: Call) -> list[Event]:
    return [event async for event in authorize(call, Next(_answer))]


@pytest.mark.parametrize(
    ("keys", "route", "key", "text"),
    [
        (KeyRing(None), "chat", None, "hello anonymous"),
        (KEYS, "chat", ALICE_KEY, "hello alice"),
        (KEYS, "other", BOB_KEY, "hello bob"),
    ],
)
async def test_an_allowed_caller_goes_through(
    keys: KeyRing, route: str, key: str | None, text: str
) -> None:
    assert await _run(_call(route, key, keys)) == [TextDelta(text)]


@pytest.mark.parametrize(
    ("route", "key", "name"),
    [
        ("other", ALICE_KEY, "alice"),
        ("no-such-route", ALICE_KEY, "alice"),  # before routing: existence is not revealed
        ("chat", CAROL_KEY, "carol"),
    ],
)
async def test_a_route_outside_the_key_list_is_permission_denied(
    route: str, key: str, name: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        await _run(_call(route, key))
    error = caught.value
    assert (error.status, error.reason) == (Status.PERMISSION_DENIED, "ROUTE_NOT_ALLOWED")
    assert error.message == f"key {name!r} may not use route {route!r}"
    assert error.metadata == {"route": route, "key": name}
    assert key not in repr(error)


# `sluice keys`.


def test_keys_hash_prints_the_digest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "hash", ALICE_KEY]) == 0
    assert capsys.readouterr() == (hash_key(ALICE_KEY) + "\n", "")


@pytest.mark.parametrize("stdin", [ALICE_KEY, ALICE_KEY + "\n", ALICE_KEY + "\r\n"])
def test_keys_hash_reads_the_key_from_stdin(
    stdin: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(["keys", "hash", "-"]) == 0
    assert capsys.readouterr() == (hash_key(ALICE_KEY) + "\n", "")


@pytest.mark.parametrize("argv", [["keys", "hash", ""], ["keys", "hash", "-"]])
def test_keys_hash_refuses_an_empty_key(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(argv) == 1
    assert capsys.readouterr() == ("", "sluice: the key is empty\n")


@pytest.mark.parametrize(("argv", "name"), [([], None), (["--name", "team-a"], "team-a")])
def test_keys_new_prints_a_key_and_its_config_entry(
    argv: list[str], name: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "new", *argv]) == 0
    out = capsys.readouterr().out
    heading, key, blank, *snippet = out.splitlines()
    assert heading == "API key (shown only now, store it safely):"
    assert blank == ""
    assert key.startswith(NEW_KEY_PREFIX)
    assert len(key) == len(NEW_KEY_PREFIX) + 43  # 32 random bytes, base64url
    assert out.count(key) == 1

    entry = AuthConfig.model_validate(yaml.safe_load("\n".join(snippet[1:]))["auth"]).keys[0]
    assert entry.sha256 == hash_key(key)
    assert entry.name == (name or f"key-{entry.sha256[:8]}")
    assert KeyRing(AuthConfig(keys=[entry])).identify({"authorization": f"Bearer {key}"}) == Caller(
        entry.name, None
    )


def test_keys_new_makes_a_different_key_each_time(capsys: pytest.CaptureFixture[str]) -> None:
    keys = set()
    for _ in range(3):
        main(["keys", "new"])
        keys.add(capsys.readouterr().out.splitlines()[1])
    assert len(keys) == 3


def test_keys_new_refuses_a_name_config_would_refuse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["keys", "new", "--name", "a key"])
    assert caught.value.code == 2
    assert "argument --name: use letters, digits" in capsys.readouterr().err
