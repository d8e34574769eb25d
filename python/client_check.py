"""Drives an OpenAI-compatible server with the official `openai` client and prints what it saw
as one JSON object (crates/autosafe/tests/openai_clients.rs asserts on it).

Usage: client_check.py BASE_URL MODEL

Each check records the client's own view of the reply (parsed by the client, not by hand), so a
server that answers in a shape the client does not accept fails here.
"""

import json
import sys

import openai
import pydantic

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 24},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
STORY = [{"role": "user", "content": "Tell me a short story about a cat."}]
PARIS = [{"role": "user", "content": "What is the weather in Paris?"}]


class Answer(pydantic.BaseModel):
    ok: bool
    reason: str


def plain(client, model):
    r = client.chat.completions.create(
        model=model, messages=STORY, max_tokens=40, temperature=0
    )
    c = r.choices[0]
    return {
        "content": c.message.content,
        "finish_reason": c.finish_reason,
        "usage": r.usage.model_dump(),
    }


def streamed(client, model):
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=STORY,
            max_tokens=40,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = [
        ch.choices[0].delta.content
        for ch in chunks
        if ch.choices and ch.choices[0].delta.content
    ]
    return {
        "chunks": len(chunks),
        "content_chunks": len(content),
        "content": "".join(content),
        "first_role": chunks[0].choices[0].delta.role,
        "finish_reason": [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1],
        "last_has_choices": bool(chunks[-1].choices),
        "usage": chunks[-1].usage.model_dump() if chunks[-1].usage else None,
    }


def tool_call(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=PARIS,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=60,
        temperature=0,
    )
    call = r.choices[0].message.tool_calls[0]
    # The same request streamed, assembled by the client's own stream helper.
    with client.chat.completions.stream(
        model=model,
        messages=PARIS,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
        temperature=0,
    ) as stream:
        final = stream.get_final_completion()
    scall = final.choices[0].message.tool_calls[0]
    return {
        "finish_reason": r.choices[0].finish_reason,
        "name": call.function.name,
        "arguments": json.loads(call.function.arguments),
        "id": call.id,
        "streamed_finish_reason": final.choices[0].finish_reason,
        "streamed_name": scall.function.name,
        "streamed_arguments": json.loads(scall.function.arguments),
    }


def structured(client, model):
    r = client.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
        response_format=Answer,
        max_tokens=60,
        temperature=0,
    )
    parsed = r.choices[0].message.parsed
    return {"parsed": parsed.model_dump() if parsed else None}


def sampling(client, model):
    """`n`, `seed` and `stop` as a client sends them."""
    ask = dict(model=model, messages=STORY, max_tokens=24, temperature=1.0, seed=7, n=2)
    a = client.chat.completions.create(**ask)
    b = client.chat.completions.create(**ask)
    stop = client.chat.completions.create(
        model=model, messages=STORY, max_tokens=40, temperature=0, stop=[" the", "."]
    )
    return {
        "n": len(a.choices),
        "same_seed_same_text": [c.message.content for c in a.choices]
        == [c.message.content for c in b.choices],
        "stopped": stop.choices[0].message.content,
        "stop_finish_reason": stop.choices[0].finish_reason,
    }


def refused(client, model):
    try:
        client.chat.completions.create(model=model, messages=STORY, logprobs=True)
    except openai.BadRequestError as e:
        return {"status": e.status_code, "param": e.param}
    return {"status": 200}


def main():
    base, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=120)
    out = {"openai_version": openai.__version__}
    for check in (plain, streamed, tool_call, structured, sampling, refused):
        out[check.__name__] = check(client, model)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
