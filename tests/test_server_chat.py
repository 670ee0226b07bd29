"""The chat endpoint with tools and thinking, driven by canned model outputs: the real app (prompt rendering,
event stream, reply parsing, SSE) over an engine that replays fixed tokens in canvas-sized pieces."""

import json
import threading
import types

import pytest
from fastapi.testclient import TestClient

from dgemma.chat_format import render
from dgemma.config import GENERATION_DEFAULTS
from dgemma.serving.app import ServerState, create_app
from dgemma.serving.chat import ReplyStream
from dgemma.tokenizer import Tokenizer, default_tokenizer_path

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "web.search", "parameters": {"type": "object", "properties": {}}}}]
USER = [{"role": "user", "content": "Weather in Paris?"}]
CALL_TEXT = '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|><|tool_response>'
THOUGHT_TEXT = "<|channel>thought\nThe user wants weather.<channel|>It is sunny in Paris.<turn|>"


class CannedEngine:
    """Replays `text`'s tokens as `piece`-token events and records the prompts it was given; a request's clamped
    head comes first, as the batcher commits it."""
    alive, error, L, context_length, max_batch = True, None, 16, 4096, 4
    model = types.SimpleNamespace(vision=None)  # a text-only model, as far as the chat endpoint looks

    def __init__(self, tok, text: str, piece: int = 16):
        self.tok, self.text, self.piece, self.prompts, self.heads = tok, text, piece, [], []
        self.V = tok.vocab_size

    def submit(self, req):
        self.prompts.append(req.prompt)
        self.heads.append(req.head)
        threading.Thread(target=self._play, args=(req,), daemon=True).start()

    def _play(self, req):
        ids = (req.head or []) + self.tok.encode(self.text)
        for i in range(0, len(ids), self.piece):
            req.emit("tokens", ids[i:i + self.piece])
        req.emit("done", {"finish_reason": "stop", "completion_tokens": len(ids), "prompt_tokens": len(req.prompt)})

    def cancel(self, req):
        pass


@pytest.fixture()
def serve():
    tok = Tokenizer.from_file(default_tokenizer_path())

    def make(text: str, piece: int = 16):
        state = ServerState("canned", model_name="m")
        state.status, state.tokenizer, state.defaults = "ok", tok, dict(GENERATION_DEFAULTS)
        state.engine = CannedEngine(tok, text, piece)
        return TestClient(create_app(state)), state.engine
    return make


def chat(client, **body):
    return client.post("/v1/chat/completions", json={"model": "m", "messages": USER, "max_tokens": 64, **body})


def events(client, **body) -> list[dict]:
    r = chat(client, stream=True, **body)
    assert r.status_code == 200, r.text
    return [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]


def test_a_tool_call_comes_back_as_openai_tool_calls(serve):
    client, engine = serve(CALL_TEXT)
    r = chat(client, tools=TOOLS).json()
    choice = r["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == ("get_weather", {"city": "Paris"})
    tok = engine.tok
    assert engine.prompts[0] == tok.encode(render(USER, tools=TOOLS))  # the tools were declared


def test_streamed_thoughts_and_calls_never_leak_into_content(serve):
    for piece in (1, 3, 16):  # token by token, small pieces, canvas-sized pieces
        client, _ = serve(THOUGHT_TEXT + "<|tool_call>call:web.search{}<tool_call|>", piece)
        deltas = [c["choices"][0]["delta"] for c in events(client, tools=TOOLS,
                                                          chat_template_kwargs={"enable_thinking": True})
                  if c.get("choices")]
        content = "".join(d.get("content") or "" for d in deltas)
        assert content == "It is sunny in Paris."
        assert not any("<|" in (d.get("content") or "") or "thought" in (d.get("content") or "") for d in deltas)
        assert [d["reasoning_content"] for d in deltas if "reasoning_content" in d] == ["The user wants weather."]
        calls = [c for d in deltas for c in d.get("tool_calls", ())]
        assert [(c["index"], c["function"]["name"]) for c in calls] == [(0, "web.search")]


def test_thinking_and_forced_calls_shape_the_prompt(serve):
    client, engine = serve('city:<|"|>Lyon<|"|>}<tool_call|>')
    r = chat(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}).json()
    assert json.loads(r["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "Lyon"}
    # the call's opening is clamped on the canvas, not appended to the prompt
    assert engine.tok.decode(engine.prompts[0], skip_special=False).endswith("<|turn>model\n")
    assert engine.tok.decode(engine.heads[0], skip_special=False) == "<|tool_call>call:get_weather{"
    assert chat(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
                max_tokens=4).json()["error"]["param"] == "max_tokens"
    client, engine = serve("ok<turn|>")
    assert chat(client, chat_template_kwargs={"enable_thinking": True}).json()["choices"][0]["message"]["content"] == "ok"
    assert "<|think|>" in engine.tok.decode(engine.prompts[0], skip_special=False)
    client, engine = serve("plain<turn|>")
    r = chat(client, tools=TOOLS, tool_choice="none").json()
    assert r["choices"][0]["message"] == {"role": "assistant", "content": "plain"}
    assert "<|tool>" not in engine.tok.decode(engine.prompts[0], skip_special=False)


def test_a_garbled_call_is_plain_content(serve):
    client, _ = serve("<|tool_call>call:get_weather{city:<|\"|>Par<tool_call|>")
    r = chat(client, tools=TOOLS)
    assert r.status_code == 200
    assert r.json()["choices"][0]["finish_reason"] == "stop" and "get_weather" in r.json()["choices"][0]["message"]["content"]


def test_tool_messages_and_developer_role_render(serve):
    client, engine = serve("It is sunny.<turn|>")
    msgs = [{"role": "developer", "content": "Be brief."}, *USER,
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    r = client.post("/v1/chat/completions", json={"model": "m", "messages": msgs, "tools": TOOLS})
    assert r.status_code == 200, r.text
    expected = [{**m, "tool_calls": [{**m["tool_calls"][0], "function": {"name": "get_weather", "arguments":
                                                                           {"city": "Paris"}}}]}
                if m.get("tool_calls") else m for m in msgs]
    assert engine.prompts[0] == engine.tok.encode(render(expected, tools=TOOLS))


@pytest.mark.parametrize("body,param", [
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools.0.function.name"),
    ({"tools": [TOOLS[0], TOOLS[0]]}, "tools.1.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
     "tools.0.function.parameters"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"chat_template_kwargs": {"reasoning_effort": "high"}}, "chat_template_kwargs"),
    ({"messages": [*USER, {"role": "tool", "tool_call_id": "x", "content": "r"}]}, "messages"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}]}]},
     "messages.0.tool_calls.0.function.arguments"),
])
def test_bad_tool_requests_are_400_naming_the_parameter(serve, body, param):
    client, _ = serve("x")
    r = chat(client, **body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_reply_stream_holds_partial_markers():
    s = ReplyStream()
    assert s.feed("Hello <|tool") == {"content": "Hello"}
    assert s.feed("_call>call:f{") is None and s.feed("}<tool_call|>") is None
    deltas, reason = s.finish()
    assert reason == "tool_calls" and deltas[-1]["tool_calls"][0]["function"]["name"] == "f"


def test_images_for_a_checkpoint_without_a_tower_are_a_400(serve):
    client, engine = serve("It is a cat.<turn|>")
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    r = chat(client, messages=[{"role": "user", "content": [part, {"type": "text", "text": "What?"}]}])
    assert r.status_code == 400 and "no vision tower" in r.json()["error"]["message"], r.text
    r = chat(client, messages=[{"role": "assistant", "content": [part]}, *USER])
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.content", r.text
    assert not engine.prompts  # nothing reached the engine
