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


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class Extensions(BaseModel):
    """dgemma's own sampling fields (send them with the OpenAI client's `extra_body`)."""
    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(None, ge=1)
    denoising_steps: int | None = Field(None, ge=1, le=1024)
    t_min: float | None = Field(None, gt=0)
    t_max: float | None = Field(None, gt=0)
    sampler: Literal["entropy", "confidence", "topk"] | None = None
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
    seed: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)


class CompletionRequest(Extensions):
    model: str
    prompt: str | list[str] | list[int]
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # assistant: [{"id", "type": "function", "function": {...}}]
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


class InfillRequest(BaseModel):
    """llama.cpp's /infill: the gap between input_prefix and input_suffix (n_predict: the gap's length)."""
    model_config = ConfigDict(extra="ignore")  # llama.cpp clients send many of their own sampler knobs
    input_prefix: str = ""
    input_suffix: str = ""
    prompt: str = ""
    input_extra: list[dict[str, Any]] = []
    n_predict: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_k: int | None = None
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stream: bool = False


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str
    add_special: bool = False
    with_pieces: bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[int]
