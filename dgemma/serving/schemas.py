"""The request bodies the server accepts (pydantic, OpenAI field names plus dgemma's decoding extensions) and
its OpenAI-style error."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers


def error_body(message, type_="invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


SEED_RANGE = dict(ge=-2**63, lt=2**64)  # what torch's generators take


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class Extensions(BaseModel):
    """dgemma's own sampling fields (send them with the OpenAI client's `extra_body`). Strict, like OpenAI's API:
    "16" is not a number and false is not a token id."""
    model_config = ConfigDict(extra="forbid", strict=True)
    top_k: int | None = Field(None, ge=1)
    denoising_steps: int | None = Field(None, ge=1, le=1024)
    t_min: float | None = Field(None, gt=0)
    t_max: float | None = Field(None, gt=0)
    sampler: Literal["entropy", "confidence", "topk", "margin"] | None = None
    entropy_bound: float | None = Field(None, gt=0)
    confidence_tau: float | None = Field(None, gt=0, le=1)
    drafts: bool = False  # stream `dgemma_draft` events carrying the denoising canvas
    timeout: float | None = Field(None, gt=0)  # seconds from submission; past it the request ends with an error
    user: str | None = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    n: int | None = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, **SEED_RANGE)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)


class CompletionRequest(Extensions):
    model: str
    prompt: str | list[str] | list[int]
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=1)
    response_format: dict[str, Any] | None = None
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    name: str
    arguments: str | dict[str, Any] = "{}"  # OpenAI sends a JSON string


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # clients echo back fields such as "index"
    id: str | None = None
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant
    tool_call_id: str | None = None  # tool: which call this answers
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChatRequest(Extensions):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    chat_template_kwargs: dict[str, Any] | None = None  # {"enable_thinking": true}
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_soft_tokens: int | None = None  # per image of the request's image_url parts: 70, 140, 280, 560 or 1120


class InfillRequest(BaseModel):
    """llama.cpp's /infill: the gap between input_prefix and input_suffix (n_predict: the gap's length)."""
    model_config = ConfigDict(extra="ignore", strict=True)  # llama.cpp clients send many of their own sampler knobs
    input_prefix: str = ""
    input_suffix: str = ""
    prompt: str = ""
    input_extra: list[dict[str, Any]] = []
    n_predict: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_k: int | None = None
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, **SEED_RANGE)
    stream: bool = False


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    content: str
    add_special: bool = False
    with_pieces: bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    tokens: list[int]


# --- what the server answers, as its OpenAPI document describes it (the fuzzing tests check every response) ---
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: Literal["stop", "length"]


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ReplyMessage(_Open):
    role: Literal["assistant"]
    content: str | None


class ChatChoice(BaseModel):
    index: int
    message: ReplyMessage
    logprobs: None
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    context_length: int
    max_model_len: int
    canvas_length: int


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class TokenPiece(BaseModel):
    id: int
    piece: str


class TokenizeResponse(BaseModel):
    tokens: list[int] | list[TokenPiece]


class DetokenizeResponse(BaseModel):
    content: str


class InfillResponse(BaseModel):
    content: str
    stop: bool
    tokens_predicted: int
    tokens_evaluated: int
    stop_type: Literal["eos", "limit"]
    model: str


class Health(BaseModel):
    status: Literal["ok", "loading", "draining", "error"]
    running: int | None = None
    waiting: int | None = None
    error: str | None = None


def documented(ok: type[BaseModel] | None, *errors: int, stream: bool = False) -> dict:
    """A route's `responses=`: its 200 body (and an SSE stream when it can stream) and the error statuses it
    answers, each with the OpenAI error envelope. Routes whose body the app validates also answer 400 and 413."""
    responses: dict = {s: {"model": ErrorResponse} for s in sorted(set(errors))}
    if ok is not None:
        responses[200] = {"model": ok}
        if stream:
            event = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
            responses[200]["content"] = {"text/event-stream": {"schema": event}}  # each event: JSON, or [DONE]
    return responses


def stops_of(stop) -> list[str]:
    """A request's stop sequences, as a list (OpenAI allows at most 4, none empty)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4:
        raise APIError(400, "at most 4 stop sequences are allowed", param="stop")
    if any(s == "" for s in stops):
        raise APIError(400, "stop sequences must not be empty", param="stop")
    return stops


JSON_OBJECT = "json_object"  # `structured_output`'s answer for a json_object response_format


def structured_output(response_format: dict | None, tokenizer, engine, prompt_len: int, max_tokens: int | None):
    """(Constraints, max_tokens) for a `json_schema` response_format, laid out by dgemma.json_schema for `engine`'s
    model and context after a prompt of `prompt_len` tokens (`max_tokens` None: what the schema takes);
    (JSON_OBJECT, max_tokens) for json_object; (None, max_tokens) for text. A bad format or schema is a 400 naming
    response_format."""
    if response_format is None or response_format == {"type": "text"}:
        return None, max_tokens
    kind = response_format.get("type")
    if kind == "json_object":  # no layout: validated and repaired (serving.repair)
        if set(response_format) != {"type"}:
            raise APIError(400, "response_format json_object takes no other fields", param="response_format")
        return JSON_OBJECT, max_tokens
    if kind != "json_schema":
        raise APIError(400, f"response_format type must be text, json_object or json_schema, got {kind!r}",
                       param="response_format")
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or "schema" not in spec:
        raise APIError(400, 'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}',
                       param="response_format")
    from ..json_schema import SchemaError, plan
    try:
        return plan(spec["schema"], tokenizer, engine.model.config, prompt_len, max_tokens,
                    context=engine.context_length)
    except SchemaError as e:
        raise APIError(400, f"response_format: {e}", param="response_format", code="invalid_schema") from None
