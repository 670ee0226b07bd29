"""dgemma.chat_format against the released checkpoint's own template (tests/data/diffusion_gemma.jinja, rendered by
jinja2 as transformers renders it): the same text for plain, system, thinking, tool-declaring and tool-calling
conversations and their edge cases; and reply parsing into content, reasoning and OpenAI tool calls."""

import json
from pathlib import Path

import pytest

from dgemma.chat_format import argument, parse_arguments, parse_reply, render
from dgemma.tokenizer import Tokenizer, default_tokenizer_path

SHIPPED = (Path(__file__).parent / "data" / "diffusion_gemma.jinja").read_text()

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "nullable": True},
        "days": {"type": "integer"},
        "Zones": {"type": "array", "items": {"type": "string"}},
        "where": {"type": "object", "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                  "required": ["lat"]},
        "tags": {"type": "array", "description": "labels", "items": {
            "type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"]}},
    }}}}
SEARCH = {"type": "function", "function": {
    "name": "web.search-v2", "description": "Search the web.",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    "response": {"type": "object", "description": "results"}}}
NO_PARAMS = {"type": "function", "function": {"name": "now"}}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather",
                                                      "arguments": {"city": "Paris", "days": 2, "ok": True,
                                                                    "where": {"lat": 48.8, "lon": None},
                                                                    "list": [1, "two", [3]]}}}
CALL2 = {"id": "c2", "type": "function", "function": {"name": "web.search-v2", "arguments": {"q": "dgemma"}}}

CASES = {
    "plain": ([{"role": "user", "content": "  Hi  "}], {}),
    "system": ([{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}], {}),
    "developer parts": ([{"role": "developer", "content": [{"type": "text", "text": " a "}, {"type": "text",
                                                                                          "text": "b"}]},
                         {"role": "user", "content": [{"type": "text", "text": " look "}, {"type": "image"}]}], {}),
    "thinking": ([{"role": "user", "content": "Why?"}], {"enable_thinking": True}),
    "thinking with system": ([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
                             {"enable_thinking": True}),
    "past thoughts stripped": ([{"role": "user", "content": "a"},
                                {"role": "assistant", "content": "<|channel>thought\nhmm<channel|>A",
                                 "reasoning_content": "hmm"},
                                {"role": "user", "content": "b"},
                                {"role": "assistant", "content": "B", "reasoning": "kept: after the last user"}], {}),
    "tools declared": ([{"role": "user", "content": "weather?"}], {"tools": [WEATHER, SEARCH, NO_PARAMS]}),
    "tool call and result": ([{"role": "user", "content": "weather in Paris?"},
                              {"role": "assistant", "content": None, "tool_calls": [CALL]},
                              {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21C"}],
                             {"tools": [WEATHER]}),
    "tool result then answer": ([{"role": "user", "content": "weather?"},
                                 {"role": "assistant", "content": "", "tool_calls": [CALL, CALL2],
                                  "reasoning_content": "need tools"},
                                 {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "r1"},
                                                                                    {"type": "image_url"}]},
                                 {"role": "tool", "tool_call_id": "c1", "name": "ignored", "content": "sunny"},
                                 {"role": "assistant", "content": "It is sunny."},
                                 {"role": "user", "content": "thanks"}], {"tools": [WEATHER, SEARCH]}),
    "pending call": ([{"role": "user", "content": "go"}, {"role": "assistant", "tool_calls": [CALL2]}],
                     {"tools": [SEARCH]}),
    "legacy tool_responses": ([{"role": "user", "content": "go"},
                               {"role": "assistant", "tool_calls": [CALL2],
                                "tool_responses": [{"name": "web.search-v2", "response": {"hits": 3, "top": "x"}}]}],
                              {"tools": [SEARCH], "enable_thinking": True}),
    "consecutive assistants": ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "one"},
                                {"role": "assistant", "content": "two"}, {"role": "model", "content": "three"}], {}),
    "tool name by id, unknown id": ([{"role": "user", "content": "x"},
                                     {"role": "assistant", "tool_calls": [CALL]},
                                     {"role": "tool", "content": "no id"}], {}),
}


@pytest.fixture(scope="module")
def shipped():
    tok = Tokenizer.from_file(default_tokenizer_path())
    tok.chat_template = SHIPPED
    return tok


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("prompt", [True, False])
def test_renders_what_the_shipped_template_renders(shipped, name, prompt):
    messages, kw = CASES[name]
    ours = render(messages, prompt, **kw)
    assert ours == shipped.render_chat(messages, prompt, **kw)
    built_in = Tokenizer.from_file(default_tokenizer_path())  # no template of its own: chat_format is its fallback
    assert built_in.apply_chat_template(messages, prompt, **kw) == shipped.apply_chat_template(messages, prompt, **kw)


def test_the_prompts_a_user_meets():
    assert render([{"role": "user", "content": "Hi"}]) == "<bos><|turn>user\nHi<turn|>\n<|turn>model\n"
    assert render([{"role": "user", "content": "Hi"}], enable_thinking=True) == \
        "<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n"
    text = render(*CASES["tool call and result"])
    assert ("<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>,days:2,list:[1,<|\"|>two<|\"|>,[3]],ok:true,"
            "where:{lat:48.8,lon:null}}<tool_call|><|tool_response>response:get_weather{value:<|\"|>sunny, 21C<|\"|>}"
            "<tool_response|>") in text
    assert text.endswith("<tool_response|>")  # the model continues its own turn after the result


@pytest.mark.parametrize("messages,message", [
    ([{"role": "robot", "content": "x"}], "message 0: unknown role 'robot'"),
    ([{"role": "user", "content": 3}], "message 0: content must be a string or a list of parts"),
    ([{"role": "user"}], "message 0: user message without content"),
    ([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}],
     "tool call arguments must be an object"),
    ([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "zz", "content": "r"}],
     "message 1: a tool message must follow an assistant message with tool_calls"),
    ([{"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "zz", "content": "r"}],
     "message 1: tool_call_id 'zz' matches no call of message 0"),
])
def test_bad_conversations_are_named(messages, message):
    with pytest.raises(ValueError, match=message):
        render(messages)


def test_replies_parse_into_content_reasoning_and_calls():
    r = parse_reply("<|channel>thought\nlet me check<channel|>Sure.<|tool_call>call:get_weather{city:<|\"|>Paris"
                    "<|\"|>,where:{lat:48.8,tags:[<|\"|>a<|\"|>,2]}}<tool_call|><|tool_response>")
    assert (r.content, r.reasoning) == ("Sure.", "let me check")
    assert [c["function"]["name"] for c in r.tool_calls] == ["get_weather"]
    assert json.loads(r.tool_calls[0]["function"]["arguments"]) == {"city": "Paris", "where": {"lat": 48.8,
                                                                                             "tags": ["a", 2]}}
    two = parse_reply('<|tool_call>call:web.search-v2{q:"plain quotes"}<tool_call|>'
                      '<|tool_call>call:now()<tool_call|><|tool_call>call:f(x=1, y="b")<tool_call|>')
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in two.tool_calls] == [
        ("web.search-v2", {"q": "plain quotes"}), ("now", {}), ("f", {"x": 1, "y": "b"})]
    assert len({c["id"] for c in two.tool_calls}) == 3 and two.content == ""
    garbled = parse_reply("<|tool_call>call:f{x:<|\"|>unterminated}<tool_call|>")
    assert garbled.tool_calls == [] and "call:f" in garbled.content  # stays text, never an error
    assert parse_reply("Hello<turn|>junk") == parse_reply("Hello")


@pytest.mark.parametrize("value", [None, True, 3, -2.5, "s", [1, [2, "x"]], {"B": 1, "a": {"c": None}}, []])
def test_arguments_round_trip(value):
    assert parse_arguments("k:" + argument(value, escape_keys=False)) == {"k": value}
