"""openai, configured by OPENAI_BASE_URL alone."""

import json

import openai
import pytest

from conftest import mock_number

MODEL = "gpt-4o-mini"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def client(sdk_env):
    return openai.OpenAI()


def chat(client, prompt, **kwargs):
    """One chat completion: (x-promptgate-cache header, parsed completion)."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], **kwargs
    )
    return raw.headers.get("x-promptgate-cache"), raw.parse()


def stream_chat(client, prompt):
    """One streamed chat completion, read to the end: (cache header, chunks)."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    return raw.headers.get("x-promptgate-cache"), list(raw.parse())


def test_chat_completion_parses(client, prompt):
    cache, completion = chat(client, prompt)

    assert cache == "MISS"
    choice = completion.choices[0]
    mock_number(choice.message.content)
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert completion.model == MODEL
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert (
        completion.usage.total_tokens
        == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_repeated_chat_completion_is_a_cache_hit(client, prompt):
    first_cache, first = chat(client, prompt)
    second_cache, second = chat(client, prompt)

    assert (first_cache, second_cache) == ("MISS", "HIT")
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.id == first.id
    assert second.usage == first.usage


def test_streamed_chat_completion_parses(client, prompt):
    cache, chunks = stream_chat(client, prompt)

    assert cache == "MISS"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    mock_number(text)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop"
    assert all(reason is None for reason in finish[:-1])
    # include_usage: the last chunk has no choices and carries the usage.
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].usage.prompt_tokens > 0


@pytest.mark.stream_cache
def test_repeated_streamed_chat_completion_replays_the_stream(client, prompt):
    first_cache, first = stream_chat(client, prompt)
    second_cache, second = stream_chat(client, prompt)

    assert (first_cache, second_cache) == ("MISS", "HIT")
    assert [c.model_dump() for c in second] == [c.model_dump() for c in first]


def test_embeddings_round_trip_and_are_cached(client, prompt):
    inputs = [f"{prompt} one", f"{prompt} two"]
    create = client.embeddings.with_raw_response.create

    first_raw = create(model="text-embedding-3-small", input=inputs)
    second_raw = create(model="text-embedding-3-small", input=inputs)
    first, second = first_raw.parse(), second_raw.parse()

    assert [d.index for d in first.data] == [0, 1]
    # The mock's vector is [answer number, three numbers from a hash of the input].
    vectors = [d.embedding for d in first.data]
    assert all(len(v) == 4 for v in vectors)
    assert vectors[0][0] == vectors[1][0]
    assert vectors[0][1:] != vectors[1][1:]
    assert first.usage.prompt_tokens > 0
    assert first_raw.headers["x-promptgate-cache"] == "MISS"
    assert second_raw.headers["x-promptgate-cache"] == "HIT"
    assert [d.embedding for d in second.data] == vectors


def test_tool_call_round_trips_and_is_cached(client, prompt):
    first_cache, first = chat(client, prompt, tools=[WEATHER_TOOL])
    second_cache, second = chat(client, prompt, tools=[WEATHER_TOOL])

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {}
    assert call.id.startswith("call_")
    assert (first_cache, second_cache) == ("MISS", "HIT")
    assert second.choices[0].message.tool_calls == choice.message.tool_calls


def test_json_mode_round_trips_and_is_its_own_cache_entry(client, prompt):
    json_cache, json_mode = chat(client, prompt, response_format={"type": "json_object"})
    text_cache, text_mode = chat(client, prompt)

    answer = json.loads(json_mode.choices[0].message.content)
    assert set(answer) == {"text"}
    # Same messages, but response_format is part of the request: a different cache entry.
    assert (json_cache, text_cache) == ("MISS", "MISS")
    assert mock_number(answer["text"]) != mock_number(text_mode.choices[0].message.content)
    again_cache, again = chat(client, prompt, response_format={"type": "json_object"})
    assert again_cache == "HIT"
    assert again == json_mode


def test_rate_limit_reaches_the_sdk_as_rate_limit_error_after_its_retries(client, prompt):
    # The SDK's own default: two retries, each honouring the mock's `retry-after: 1`.
    with pytest.raises(openai.RateLimitError) as raised:
        chat(client, prompt, extra_headers={"x-mock-status": "429"})

    assert raised.value.status_code == 429
    assert raised.value.body["message"] == "mock status 429"
    assert raised.value.response.request.headers["x-stainless-retry-count"] == "2"


def test_server_error_reaches_the_sdk_as_internal_server_error(sdk_env, prompt):
    client = openai.OpenAI(max_retries=0)

    with pytest.raises(openai.InternalServerError) as raised:
        chat(client, prompt, extra_headers={"x-mock-status": "500"})

    assert raised.value.status_code == 500
    assert raised.value.body["message"] == "mock status 500"


def test_an_error_is_not_cached(sdk_env, prompt):
    client = openai.OpenAI(max_retries=0)
    with pytest.raises(openai.RateLimitError):
        chat(client, prompt, extra_headers={"x-mock-status": "429"})

    # The same request (the fault header is not part of the cache key) now reaches the upstream.
    cache, completion = chat(client, prompt)

    assert cache == "MISS"
    mock_number(completion.choices[0].message.content)


def test_realtime_client_connects_through_promptgate(client, prompt):
    # The Realtime API goes to the same base URL, as a WebSocket upgrade: promptgate tunnels
    # it to the route's upstream (the mock's Realtime-like endpoint) and never caches it.
    for _ in range(2):
        with client.realtime.connect(model="gpt-realtime") as connection:
            created = connection.recv()
            assert created.type == "session.created"

            connection.session.update(session={"type": "realtime", "instructions": prompt})
            updated = connection.recv()

            assert updated.type == "session.updated"
            assert updated.session.instructions == prompt


def test_background_response_polled_through_promptgate_completes(client, prompt):
    # A background job is created, then polled: neither may be answered from the cache, or
    # the poll loop would never see the job finish.
    created = client.responses.with_raw_response.create(
        model=MODEL, input=prompt, background=True
    )
    assert created.headers.get("x-promptgate-cache") == "BYPASS"
    job = created.parse()
    assert job.status == "queued"

    seen = []
    for _ in range(5):
        raw = client.responses.with_raw_response.retrieve(job.id)
        assert raw.headers.get("x-promptgate-cache") == "BYPASS"
        job = raw.parse()
        seen.append(job.status)
        if job.status == "completed":
            break

    assert seen == ["in_progress", "completed"]
    mock_number(job.output_text)


def test_promptgate_rate_limit_is_a_rate_limit_error_with_its_retry_after(proxy, sdk_env, prompt):
    # The `limited` route allows two requests a minute per key; a key of this test's own.
    client = openai.OpenAI(
        base_url=f"{proxy}/limited/v1", api_key=f"sk-{prompt}", max_retries=0
    )
    for i in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"{prompt} {i}"}]
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(1 - i)

    with pytest.raises(openai.RateLimitError) as raised:
        chat(client, f"{prompt} 2")

    error = raised.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.body["type"] == "rate_limit_exceeded"
    assert error.body["limit"] == "requests_per_minute"
    headers = error.response.headers
    # Two a minute: the third is admitted 30 s after the first (rounded up to whole seconds).
    assert 28 <= int(headers["retry-after"]) <= 30
    assert abs(int(headers["retry-after-ms"]) / 1000 - int(headers["retry-after"])) < 1
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert error.response.request.headers["x-stainless-retry-count"] == "0"


# --- Responses API -------------------------------------------------------------------------


def responses_stream_bytes(client, prompt, **headers):
    """One streamed Responses call read raw: (cache header, the exact bytes received)."""
    with client.responses.with_streaming_response.create(
        model=MODEL, input=prompt, stream=True, extra_headers=headers
    ) as raw:
        return raw.headers.get("x-promptgate-cache"), b"".join(raw.iter_bytes())


def test_responses_stream_parses(client, prompt):
    events = list(client.responses.create(model=MODEL, input=prompt, stream=True))

    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    mock_number(text)
    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.output_text == text
    assert completed.usage.output_tokens > 0


@pytest.mark.stream_cache
def test_repeated_responses_stream_is_a_byte_identical_hit(client, prompt):
    first_cache, first = responses_stream_bytes(client, prompt)
    second_cache, second = responses_stream_bytes(client, prompt)

    assert (first_cache, second_cache) == ("MISS", "HIT")
    assert b"event: response.completed" in first
    assert second == first


def test_repeated_response_is_a_cache_hit(client, prompt):
    first = client.responses.with_raw_response.create(model=MODEL, input=prompt)
    second = client.responses.with_raw_response.create(model=MODEL, input=prompt)

    caches = [r.headers.get("x-promptgate-cache") for r in (first, second)]
    assert caches == ["MISS", "HIT"]
    assert second.parse().output_text == first.parse().output_text
    mock_number(first.parse().output_text)


def test_failed_and_incomplete_responses_streams_are_not_stored(client, prompt):
    for outcome in ("error", "partial"):
        caches = []
        for _ in range(2):
            raw = client.responses.with_raw_response.create(
                model=MODEL,
                input=f"{prompt} {outcome}",
                stream=True,
                extra_headers={"x-mock-outcome": outcome},
            )
            caches.append(raw.headers.get("x-promptgate-cache"))
            try:
                events = list(raw.parse())
            except openai.APIError:
                assert outcome == "error"
            else:
                assert events[-1].type in ("error", "response.incomplete"), outcome
        assert caches == ["MISS", "MISS"], outcome


# --- answers that are not whole ------------------------------------------------------------


def stream_chat_outcome(client, prompt, outcome):
    """A streamed chat whose upstream answer is of kind `outcome` (x-mock-outcome): (cache
    header, chunks read, or the SDK's error)."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        extra_headers={"x-mock-outcome": outcome},
    )
    try:
        return raw.headers.get("x-promptgate-cache"), list(raw.parse())
    except openai.APIError as error:
        return raw.headers.get("x-promptgate-cache"), error


def test_an_error_inside_a_stream_is_not_stored(client, prompt):
    first_cache, first = stream_chat_outcome(client, prompt, "error")
    second_cache, second = stream_chat_outcome(client, prompt, "error")

    # the SDK sees the engine's error each time; the second is a fresh upstream call
    assert isinstance(first, openai.APIError) and isinstance(second, openai.APIError)
    assert "mock engine error" in str(first)
    assert (first_cache, second_cache) == ("MISS", "MISS")


def test_a_partial_stream_is_not_stored(client, prompt):
    first_cache, first = stream_chat_outcome(client, prompt, "partial")
    second_cache, second = stream_chat_outcome(client, prompt, "partial")

    assert (first_cache, second_cache) == ("MISS", "MISS")
    assert all(c.choices[0].finish_reason is None for c in first if c.choices)
    texts = ["".join(c.choices[0].delta.content or "" for c in s if c.choices) for s in (first, second)]
    assert mock_number(texts[0]) != mock_number(texts[1])


def test_a_content_filtered_answer_is_not_stored(client, prompt):
    extra = {"x-mock-outcome": "refusal"}
    first_cache, first = chat(client, prompt, extra_headers=extra)
    second_cache, second = chat(client, prompt, extra_headers=extra)

    assert first.choices[0].finish_reason == "content_filter"
    assert (first_cache, second_cache) == ("MISS", "MISS")
    assert second.id != first.id


# --- uploads -------------------------------------------------------------------------------


def transcribe(client, path, **kwargs):
    """One transcription of the file at `path`: (cache header, text). The SDK sends it as a
    multipart upload with a fresh random boundary each time."""
    with open(path, "rb") as audio:
        raw = client.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=audio, **kwargs
        )
    return raw.headers.get("x-promptgate-cache"), raw.parse().text


def test_the_same_audio_file_twice_is_a_cache_hit(client, prompt, tmp_path):
    audio = tmp_path / "hello.wav"
    audio.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + prompt.encode() + bytes(range(256)))

    first_cache, first = transcribe(client, audio)
    second_cache, second = transcribe(client, audio)

    assert (first_cache, second_cache) == ("MISS", "HIT")
    assert second == first
    mock_number(first)


def test_a_different_audio_file_or_option_is_a_miss(client, prompt, tmp_path):
    audio = tmp_path / "hello.wav"
    audio.write_bytes(b"RIFF" + prompt.encode())
    other = tmp_path / "other.wav"
    other.write_bytes(b"RIFF" + prompt.encode() + b"!")

    assert transcribe(client, audio)[0] == "MISS"
    assert transcribe(client, other)[0] == "MISS"
    assert transcribe(client, audio, language="de")[0] == "MISS"
    assert transcribe(client, audio)[0] == "HIT"
