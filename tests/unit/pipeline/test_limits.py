"""The limits stage on in-process state: requests, tokens, concurrent
streams and budgets per route and per key, refusals with their quota
details, and the failure policy when shared state is down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

import pytest

from sluice.config.schema import BudgetConfig, FailurePolicy, LimitsConfig, Price
from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    ImagePart,
    Message,
    Operation,
    Role,
    Start,
    TextDelta,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from sluice.errors import GatewayError, Status, upstream_unreachable
from sluice.identity import Caller
from sluice.pipeline.call import Call, EventStream, Handler, Next, build_pipeline
from sluice.pipeline.limits import Limits, estimate_tokens
from sluice.pricing import PriceTable
from sluice.providers.mock import MockAdapter, MockSettings
from sluice.routes import Route, Target
from sluice.state.base import (
    Addition,
    Admission,
    BudgetLimit,
    Charge,
    ConcurrencyLimit,
    Lease,
    RateLimit,
    ResponseCacheStore,
    SemanticEntryStore,
    StateUnavailableError,
    StateWait,
)
from sluice.state.experiments import ExperimentStore
from sluice.state.memory import MemoryState

# 2 h 10 min into a UTC day: 50 minutes left of the hour window.
T0 = 86400.0 * 20000 + 7800.0
ADAPTER = MockAdapter(MockSettings(provider="mock"))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def route(name: str = "chat", provider: str = "openai", model: str = "gpt-4o-mini") -> Route:
    return Route(name, Operation.CHAT, (Target(provider, model, ADAPTER),), GenerationParams())


def chat(text: str = "hi", max_tokens: int | None = None) -> ChatRequest:
    return ChatRequest(
        route="chat",
        messages=(Message(Role.USER, (TextPart(text),)),),
        generation=GenerationParams(max_tokens=max_tokens),
    )


def call(
    on: Route | None = None, caller: Caller | None = None, request: ChatRequest | None = None
) -> Call:
    return Call(request=request or chat(), headers={}, route=on or route(), caller=caller)


def key(limits: LimitsConfig | None = None, budget: BudgetConfig | None = None) -> Caller:
    return Caller("alice", None, limits, budget)


def limits(**fields: object) -> LimitsConfig:
    return LimitsConfig.model_validate(fields)


USAGE = Usage(input_tokens=600, output_tokens=400)
UNREACHABLE = upstream_unreachable("openai", "connection reset")
# $10 per million tokens: the 1000 tokens of USAGE cost $0.01.
TEN_DOLLARS = Price(input=10.0, output=10.0)


def answer(usage: Usage = USAGE, *, cache_hit: bool = False) -> list[Event]:
    return [
        Start("r1", "gpt-4o-mini", "openai", "chat", cache_hit=cache_hit),
        TextDelta("hello"),
        usage,
        Finish(FinishReason.STOP),
    ]


def endpoint(
    events: list[Event] | None = None,
    *,
    error: Exception | None = None,
    hold: asyncio.Event | None = None,
) -> Handler:
    """An upstream that yields `events`, then waits for `hold` (if given),
    then fails with `error` (if given)."""

    async def answer_call(call: Call) -> AsyncGenerator[Event, None]:
        assert call.route is not None
        # As the attempts endpoint records it: priced once its usage arrives.
        call.answered_by, call.cost = call.route.targets[0], None
        for event in answer() if events is None else events:
            yield event
            if hold is not None and isinstance(event, Start):
                await hold.wait()
        if error is not None:
            raise error

    return answer_call


async def close(stream: EventStream) -> None:
    """What a consumer that stops reading does."""
    await stream.aclose()


class Setup:
    def __init__(
        self,
        routes: dict[str, LimitsConfig] | None = None,
        prices: dict[str, Price] | None = None,
    ) -> None:
        self.clock = Clock()
        self.state = MemoryState(clock=self.clock, wall_clock=self.clock)
        self.prices = PriceTable(prices)
        self.stage = Limits(self.state, self.prices, routes or {})

    def open(self, on: Call, upstream: Handler | None = None) -> EventStream:
        """The stage's stream of `on`, composed as the gateway composes it,
        the attempts endpoint's pricing of usage in front of `upstream`."""
        return build_pipeline([self.stage, self._priced], upstream or endpoint())(on)

    def _priced(self, call: Call, next: Next) -> EventStream:
        async def priced() -> AsyncGenerator[Event, None]:
            async for event in next(call):
                if isinstance(event, Usage) and call.answered_by is not None:
                    target = call.answered_by
                    call.cost = self.prices.cost(target.provider, target.model, event)
                yield event

        return priced()

    async def run(self, on: Call, upstream: Handler | None = None) -> list[Event]:
        return [event async for event in self.open(on, upstream)]

    async def refusal(self, on: Call, upstream: Handler | None = None) -> GatewayError:
        with pytest.raises(GatewayError) as caught:
            await self.run(on, upstream)
        return caught.value


async def test_a_route_without_limits_passes_every_event_through() -> None:
    setup = Setup()
    for _ in range(3):
        assert await setup.run(call(caller=key())) == answer()


async def test_exactly_n_requests_pass_then_rate_limited_with_retry_info() -> None:
    setup = Setup({"chat": limits(requests="3/minute")})
    for _ in range(3):
        await setup.run(call())
    error = await setup.refusal(call())
    assert error.status is Status.RESOURCE_EXHAUSTED
    assert error.reason == "RATE_LIMITED"
    assert error.quota_subject == "route:chat/requests"
    assert error.message == "route chat allows 3/minute requests"
    assert error.retry_after == pytest.approx(20.0)  # one request every 20 s
    setup.clock.now += 20.0
    await setup.run(call())


async def test_key_limits_count_its_calls_across_routes() -> None:
    setup = Setup()
    alice = key(limits(requests="2/minute"))
    await setup.run(call(route("chat"), alice))
    await setup.run(call(route("other"), alice))
    error = await setup.refusal(call(route("chat"), alice))
    assert (error.reason, error.quota_subject) == ("RATE_LIMITED", "key:alice/requests")
    assert error.message == "key alice allows 2/minute requests"
    # Another key, or no key, is not counted against alice.
    await setup.run(call(route("chat"), Caller("bob", None, limits(requests="2/minute"))))
    await setup.run(call(route("chat")))


async def test_a_call_refused_by_one_scope_takes_nothing_from_another() -> None:
    setup = Setup({"chat": limits(requests="1/hour")})
    alice = key(limits(requests="1/minute"))
    await setup.run(call(route("other"), alice))
    error = await setup.refusal(call(route("chat"), alice))
    assert error.quota_subject == "key:alice/requests"
    setup.clock.now += 60.0
    # Had the refused call taken chat's one request an hour, this one would fail.
    await setup.run(call(route("chat"), alice))


async def test_racing_calls_refused_by_one_scope_take_nothing_from_another() -> None:
    # Admission is one atomic step: both calls fit chat's and alice's limits
    # when checked, only one fits chat's when taken, and the refused one
    # must not have spent one of alice's two requests a minute.
    setup = Setup({"chat": limits(requests="1/hour")})
    alice = key(limits(requests="2/minute"))
    outcomes = await asyncio.gather(
        setup.run(call(route("chat"), alice)),
        setup.run(call(route("chat"), alice)),
        return_exceptions=True,
    )
    refused = [outcome for outcome in outcomes if isinstance(outcome, GatewayError)]
    assert [error.quota_subject for error in refused] == ["route:chat/requests"]
    await setup.run(call(route("other"), alice))  # alice's second request this minute
    assert (await setup.refusal(call(route("other"), alice))).quota_subject == (
        "key:alice/requests"
    )


@pytest.mark.parametrize(
    ("request_", "reason", "retry_after"),
    [
        pytest.param(chat(), "BUDGET_EXHAUSTED", 3000.0, id="the-longest-wait"),
        pytest.param(chat("x" * 404), "TOKEN_LIMITED", None, id="never-fits"),
    ],
)
async def test_of_several_refusals_the_one_to_act_on_is_reported(
    request_: ChatRequest, reason: str, retry_after: float | None
) -> None:
    setup = Setup(
        {"chat": limits(requests="1/minute", tokens="100/minute")},
        prices={"openai/gpt-4o-mini": TEN_DOLLARS},
    )
    alice = key(budget=BudgetConfig(usd=0.005, period=3600.0))
    await setup.run(call(caller=alice), endpoint(answer(Usage(input_tokens=500))))
    error = await setup.refusal(call(caller=alice, request=request_))
    assert error.reason == reason
    assert error.retry_after == (None if retry_after is None else pytest.approx(retry_after))


async def test_a_huge_prompt_is_refused_by_the_token_precheck() -> None:
    setup = Setup({"chat": limits(tokens="1000/minute")})
    error = await setup.refusal(call(request=chat("x" * 3999, max_tokens=1)))
    assert error.status is Status.RESOURCE_EXHAUSTED
    assert (error.reason, error.quota_subject) == ("TOKEN_LIMITED", "route:chat/tokens")
    assert error.message == "route chat allows 1000/minute tokens; this call needs about 1001"
    assert error.retry_after is None  # it can never fit
    await setup.run(call(request=chat("x" * 3996, max_tokens=1)))  # 999 + 1 fits


@pytest.mark.parametrize(
    ("events", "fails", "charged"),
    [
        pytest.param(answer(), False, True, id="completed"),
        pytest.param(answer()[:3], True, True, id="failed-after-usage"),
        pytest.param(answer()[:2], True, False, id="failed-before-usage"),
        pytest.param(answer(cache_hit=True), False, False, id="cache-hit"),
        pytest.param(answer(Usage(reported=False)), False, False, id="usage-unreported"),
    ],
)
async def test_real_usage_is_charged_when_the_stream_ends(
    events: list[Event], fails: bool, charged: bool
) -> None:
    setup = Setup({"chat": limits(tokens="1000/minute")})
    if fails:
        with pytest.raises(GatewayError, match="connection reset"):
            await setup.run(call(), endpoint(events, error=UNREACHABLE))
    else:
        await setup.run(call(), endpoint(events))
    if charged:
        # 600 input + 400 output: the minute's 1000 tokens are spent.
        error = await setup.refusal(call())
        assert (error.reason, error.quota_subject) == ("TOKEN_LIMITED", "route:chat/tokens")
        assert error.retry_after == pytest.approx(0.06)  # one token's share of the minute
    else:
        await setup.run(call())


async def end_by_completing(stream: AsyncGenerator[Event, None], hold: asyncio.Event) -> None:
    hold.set()
    assert [event async for event in stream] == answer()[1:]


async def end_by_failing(stream: AsyncGenerator[Event, None], hold: asyncio.Event) -> None:
    hold.set()
    with pytest.raises(GatewayError, match="reset"):
        async for _ in stream:
            pass


async def end_by_closing(stream: EventStream, hold: asyncio.Event) -> None:
    await close(stream)


async def end_by_cancelling(stream: EventStream, hold: asyncio.Event) -> None:
    async def read_on() -> Event:
        return await anext(stream)

    consumer = asyncio.create_task(read_on())
    await asyncio.sleep(0)  # the consumer now waits mid-stream
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer


Ender = Callable[[EventStream, asyncio.Event], Awaitable[None]]


@pytest.mark.parametrize(
    ("ender", "error"),
    [
        pytest.param(end_by_completing, None, id="completed"),
        pytest.param(end_by_failing, UNREACHABLE, id="failed"),
        pytest.param(end_by_closing, None, id="closed-by-consumer"),
        pytest.param(end_by_cancelling, None, id="consumer-cancelled"),
    ],
)
async def test_n_streams_in_flight_pass_and_a_slot_frees_when_one_ends(
    ender: Ender, error: Exception | None
) -> None:
    setup = Setup({"chat": limits(concurrent=2)})
    hold = asyncio.Event()
    upstream = endpoint(error=error, hold=hold)
    streams = [setup.open(call(), upstream) for _ in range(2)]
    for stream in streams:
        assert isinstance(await anext(stream), Start)
    refused = await setup.refusal(call())
    assert refused.status is Status.RESOURCE_EXHAUSTED
    assert (refused.reason, refused.quota_subject) == (
        "CONCURRENCY_LIMITED",
        "route:chat/concurrent",
    )
    assert refused.message == "route chat allows 2 concurrent streams"
    assert refused.retry_after is None
    await ender(streams[0], hold)
    third = setup.open(call(), upstream)
    assert isinstance(await anext(third), Start)
    for stream in (streams[1], third):
        await close(stream)


async def test_a_call_refused_a_stream_slot_takes_no_request() -> None:
    setup = Setup({"chat": limits(requests="2/hour")})
    alice = key(limits(concurrent=1))
    held = setup.open(call(caller=alice), endpoint(hold=asyncio.Event()))
    await anext(held)
    error = await setup.refusal(call(caller=alice))
    assert error.quota_subject == "key:alice/concurrent"
    await close(held)
    await setup.run(call(caller=alice))  # the hour's second request
    assert (await setup.refusal(call(caller=alice))).quota_subject == "route:chat/requests"


@pytest.mark.parametrize(
    ("events", "charged"),
    [
        pytest.param(answer(), True, id="answered"),
        pytest.param(answer(cache_hit=True), False, id="cache-hit"),
    ],
)
async def test_spend_past_the_budget_refuses_until_the_window_ends(
    events: list[Event], charged: bool
) -> None:
    setup = Setup(prices={"openai/gpt-4o-mini": TEN_DOLLARS})
    alice = key(budget=BudgetConfig(usd=0.005, period=3600.0))
    await setup.run(call(caller=alice), endpoint(events))
    if not charged:
        await setup.run(call(caller=alice))
        return
    error = await setup.refusal(call(caller=alice))
    assert error.status is Status.RESOURCE_EXHAUSTED
    assert (error.reason, error.quota_subject) == ("BUDGET_EXHAUSTED", "key:alice/budget")
    assert error.message == "key alice has spent its budget of 0.005 USD per hour"
    assert error.retry_after == pytest.approx(3000.0)  # T0 is 10 minutes into the hour
    setup.clock.now += 3000.0
    await setup.run(call(caller=alice))


async def test_a_budgeted_key_is_refused_a_route_whose_model_has_no_price() -> None:
    setup = Setup()
    local = route("local", provider="vllm", model="Qwen/Qwen2.5-7B-Instruct")
    called: list[Call] = []

    async def upstream(on: Call) -> AsyncGenerator[Event, None]:
        called.append(on)
        for event in answer():
            yield event

    error = await setup.refusal(
        call(local, key(budget=BudgetConfig(usd=1.0, period=86400.0))), upstream
    )
    assert error.status is Status.FAILED_PRECONDITION
    assert error.reason == "MODEL_UNPRICED"
    assert error.message == (
        "key alice has a budget, but route local's model vllm/Qwen/Qwen2.5-7B-Instruct "
        "has no price: add it under `prices:` in the config"
    )
    assert called == []
    # Without a budget, the model's price does not matter.
    await setup.run(call(local, key(limits(requests="5/minute"))), upstream)
    assert len(called) == 1


class DownState:
    """Shared state that never answers."""

    async def admit(
        self,
        rates: Sequence[RateLimit] = (),
        budgets: Sequence[BudgetLimit] = (),
        concurrency: Sequence[ConcurrencyLimit] = (),
        *,
        within: StateWait | None = None,
    ) -> Admission:
        raise StateUnavailableError("down")

    async def settle(
        self,
        leases: Sequence[Lease] = (),
        charges: Sequence[Charge] = (),
        additions: Sequence[Addition] = (),
        *,
        within: StateWait | None = None,
    ) -> None:
        raise StateUnavailableError("down")

    def cache(self, namespace: str, max_entries: int) -> ResponseCacheStore:
        raise StateUnavailableError("down")

    @property
    def experiments(self) -> ExperimentStore:
        raise StateUnavailableError("down")

    @property
    def semantic(self) -> SemanticEntryStore:
        raise StateUnavailableError("down")

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize(
    ("route_policy", "key_policy", "passes"),
    [
        ("fail_open", "fail_open", True),
        ("fail_closed", "fail_open", False),
        ("fail_open", "fail_closed", False),
    ],
)
async def test_state_down_follows_the_failure_policy_of_every_scope(
    route_policy: FailurePolicy,
    key_policy: FailurePolicy,
    passes: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stage = Limits(
        DownState(),
        PriceTable(),
        {"chat": limits(requests="1/minute", failure_policy=route_policy)},
    )
    alice = key(
        limits(concurrent=1, tokens="10/minute", failure_policy=key_policy),
        BudgetConfig(usd=0.001, period=60.0),
    )
    for _ in range(3):  # more calls than any limit allows
        if passes:
            handler = build_pipeline([stage], endpoint())
            assert [event async for event in handler(call(caller=alice))] == answer()
        else:
            with pytest.raises(GatewayError) as caught:
                async for _ in build_pipeline([stage], endpoint())(call(caller=alice)):
                    pass
            assert caught.value.status is Status.UNAVAILABLE
            assert caught.value.reason == "STATE_UNAVAILABLE"
    warnings = [r for r in caplog.records if r.name == "sluice.pipeline.limits"]
    assert len(warnings) == (1 if passes else 0)  # once a minute, not once a call
    if passes:
        assert warnings[0].getMessage() == (
            "shared state unavailable (StateUnavailableError): limits fail open, calls pass unlimited"
        )


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (chat("abcd"), 1),
        (chat("abcde"), 2),
        (chat("abcd", max_tokens=10), 11),
        (
            ChatRequest(
                route="chat",
                messages=(
                    Message(Role.ASSISTANT, (ToolCallPart("id1", "f", "{}"), ImagePart(url="u"))),
                    Message(Role.TOOL, (ToolResultPart("id1", "12345"),)),
                ),
                tools=(Tool("g", "d", {}),),
            ),
            3,  # f {} 12345 g d {}: 11 characters; the image counts nothing
        ),
        (CompletionRequest(route="c", prompt="abcdef", suffix="gh"), 2),
        (CompletionRequest(route="c", prompt="ab", generation=GenerationParams(max_tokens=5)), 6),
        (EmbeddingRequest(route="e", inputs=("abcd", "abcde")), 3),
    ],
)
def test_the_token_estimate_is_a_quarter_of_the_text_plus_max_tokens(
    request_: ChatRequest | CompletionRequest | EmbeddingRequest, expected: int
) -> None:
    assert estimate_tokens(request_) == expected
