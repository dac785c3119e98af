"""An MLflow scoring server (`mlflow models serve`, or a model served the
same way), as MLflow AI Gateway's own `mlflow-model-serving` provider
speaks to it (mlflow/gateway/providers/mlflow.py).

Every call is `POST <api_base>/invocations` with `{"inputs": [...],
"params": {...}}`: the prompt for completions, the one message's text for
chat (MLflow's gateway sends a chat model a single query), the texts for
embeddings; the set generation parameters go in `params`. The answer is one
JSON body, `{"predictions": [...]}` (a list, or an object of one list or
of `choices`): the scoring server does not stream, so the whole answer is
one text delta, with no finish reason and no token counts. Errors are
MLflow's REST errors, `{"error_code", "message", "stack_trace"}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from sluice import errors
from sluice.domain import (
    ChatRequest,
    EmbeddingRequest,
    Embeddings,
    Event,
    Finish,
    FinishReason,
    Operation,
    Request,
    Start,
    TextDelta,
    TextPart,
    Usage,
)
from sluice.providers.base import (
    EmbeddingDecoder,
    ErrorFields,
    HttpAdapter,
    JSONBodyDecoder,
    StreamDecoder,
)
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.databricks import databricks_error
from sluice.providers.http import UpstreamRequest
from sluice.providers.settings import ProviderSettings
from sluice.providers.wire import JSON, json_headers, sampling_fields

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sluice.providers.http import UpstreamClient

PROVIDER = "mlflow"


class MLflowAdapter(HttpAdapter):
    provider = PROVIDER

    def __init__(
        self,
        settings: MLflowSettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        super().__init__(client, connect_timeout=connect_timeout, bounds=bounds)
        self._model = settings.name
        self._url = f"{settings.base_url}/invocations"
        # A scoring server has no auth; a proxy in front of it may want a token.
        self._headers = json_headers(bearer=settings.key)

    def build(self, request: Request) -> UpstreamRequest:
        if isinstance(request, EmbeddingRequest):
            return UpstreamRequest(self._url, {"inputs": list(request.inputs)}, self._headers)
        if isinstance(request, ChatRequest):
            inputs = _chat_input(request)
        else:
            if request.suffix:
                raise errors.invalid_argument("suffix", "mlflow has no fill-in-the-middle suffix")
            inputs = request.prompt
        body: JSON = {"inputs": [inputs]}
        if params := sampling_fields(request.generation, max_tokens="max_tokens"):
            body["params"] = params
        return UpstreamRequest(self._url, body, self._headers)

    def decoder(self, request: Request) -> StreamDecoder:
        if isinstance(request, EmbeddingRequest):
            return MLflowEmbeddingDecoder(self._model)
        return MLflowTextDecoder(self._model)

    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        return databricks_error(payload, headers) or ErrorFields()


class MLflowSettings(ProviderSettings):
    """`api_base` is the scoring server's root (MLflow's `model_server_url`)."""

    operations: ClassVar[frozenset[Operation]] = frozenset(Operation)
    adapter = MLflowAdapter
    mlflow_names = ("mlflow-model-serving",)

    provider: Literal["mlflow"]
    api_base: str


def _chat_input(request: ChatRequest) -> str:
    """The text of the one message MLflow's gateway sends a chat model."""
    if len(request.messages) != 1:
        raise errors.invalid_argument(
            "messages",
            f"mlflow model serving takes one message per call, not {len(request.messages)}",
        )
    parts = request.messages[0].parts
    if not all(isinstance(part, TextPart) for part in parts):
        raise errors.invalid_argument("messages[0].parts", "mlflow model serving takes text only")
    if request.tools:
        raise errors.invalid_argument("tools", "mlflow model serving takes no tools")
    return "".join(part.text for part in parts if isinstance(part, TextPart))


def _predictions(payload: JSON) -> Any:
    """`predictions` as MLflow's gateway reads it: a list, or an object whose
    one value, or whose `choices`, is the list."""
    predictions = payload["predictions"]
    if isinstance(predictions, dict):
        if len(predictions) == 1:
            return next(iter(predictions.values()))
        return predictions["choices"]
    return predictions


class MLflowTextDecoder(JSONBodyDecoder):
    """A chat or completions answer: the first prediction, as one delta."""

    answer = "scoring server answer"

    def __init__(self, model: str) -> None:
        super().__init__(PROVIDER)
        self._model = model

    def _events(self, payload: JSON) -> list[Event]:
        text = _predictions(payload)[0]
        if not isinstance(text, str):
            raise TypeError(f"a prediction of {type(text).__name__}, not text")
        # The scoring server says neither why it stopped nor how many tokens.
        return [
            Start("", self._model),
            TextDelta(text),
            Usage(reported=False),
            Finish(FinishReason.OTHER),
        ]


class MLflowEmbeddingDecoder(EmbeddingDecoder):
    def __init__(self, model: str) -> None:
        super().__init__(PROVIDER)
        self._model = model

    def _read(self, payload: JSON) -> tuple[Start, Embeddings, Usage]:
        predictions = _predictions(payload)
        # One input may come back as one flat vector.
        if predictions and all(isinstance(value, float) for value in predictions):
            predictions = [predictions]
        vectors = tuple(tuple(float(value) for value in vector) for vector in predictions)
        return Start("", self._model), Embeddings(vectors), Usage(reported=False)
