"""ollama, configured by OLLAMA_HOST alone. Its responses do not expose HTTP headers, so a hit
is proven by the answer alone: the same mock answer number twice."""

import ollama
import pytest

from conftest import mock_number

MODEL = "llama3.2"


@pytest.fixture
def client(sdk_env):
    return ollama.Client()


def chat(client, prompt, **kwargs):
    return client.chat(model=MODEL, messages=[{"role": "user", "content": prompt}], **kwargs)


def test_chat_parses(client, prompt):
    response = chat(client, prompt)

    mock_number(response.message.content)
    assert response.message.role == "assistant"
    assert response.model == MODEL
    assert response.done is True
    assert response.done_reason == "stop"
    assert response.prompt_eval_count > 0
    assert response.eval_count > 0


def test_repeated_chat_is_a_cache_hit(client, prompt):
    first = chat(client, prompt)
    second = chat(client, prompt)

    assert second.message.content == first.message.content
    assert second.created_at == first.created_at
    assert second == first


def test_streamed_chat_parses(client, prompt):
    chunks = list(chat(client, prompt, stream=True))

    assert len(chunks) > 1
    mock_number("".join(chunk.message.content for chunk in chunks))
    assert [chunk.done for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].done_reason == "stop"
    assert chunks[-1].prompt_eval_count > 0
    assert chunks[-1].eval_count > 0


@pytest.mark.stream_cache
def test_repeated_streamed_chat_replays_the_stream(client, prompt):
    first = list(chat(client, prompt, stream=True))
    second = list(chat(client, prompt, stream=True))

    assert second == first


def test_generate_parses_and_is_cached(client, prompt):
    first = client.generate(model=MODEL, prompt=prompt, stream=False)
    second = client.generate(model=MODEL, prompt=prompt, stream=False)

    mock_number(first.response)
    assert first.done_reason == "stop"
    assert first.eval_count > 0
    assert second == first


def test_upstream_error_reaches_the_sdk_as_response_error(sdk_env, prompt):
    client = ollama.Client(headers={"x-mock-status": "500"})

    with pytest.raises(ollama.ResponseError) as raised:
        chat(client, prompt)

    assert raised.value.status_code == 500
