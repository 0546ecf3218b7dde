"""google-genai, configured by GOOGLE_GEMINI_BASE_URL alone."""

import pytest
from google import genai
from google.genai import errors, types

from conftest import mock_number

MODEL = "gemini-2.0-flash"


@pytest.fixture
def client(sdk_env):
    return genai.Client()


def cache_header(response):
    return response.sdk_http_response.headers.get("x-promptgate-cache")


def stream(client, prompt):
    return list(client.models.generate_content_stream(model=MODEL, contents=prompt))


def test_generate_content_parses(client, prompt):
    response = client.models.generate_content(model=MODEL, contents=prompt)

    assert cache_header(response) == "MISS"
    mock_number(response.text)
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.model_version == MODEL
    usage = response.usage_metadata
    assert usage.prompt_token_count > 0
    assert usage.candidates_token_count > 0
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count


def test_repeated_generate_content_is_a_cache_hit(client, prompt):
    first = client.models.generate_content(model=MODEL, contents=prompt)
    second = client.models.generate_content(model=MODEL, contents=prompt)

    assert (cache_header(first), cache_header(second)) == ("MISS", "HIT")
    assert second.text == first.text
    assert second.response_id == first.response_id
    assert second.usage_metadata == first.usage_metadata


def test_generate_content_stream_parses(client, prompt):
    chunks = stream(client, prompt)

    assert cache_header(chunks[0]) == "MISS"
    assert len(chunks) > 1
    mock_number("".join(chunk.text for chunk in chunks))
    assert [c.candidates[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count > 0
    assert chunks[-1].usage_metadata.prompt_token_count > 0


@pytest.mark.stream_cache
def test_repeated_generate_content_stream_replays_the_stream(client, prompt):
    first = stream(client, prompt)
    second = stream(client, prompt)

    assert (cache_header(first[0]), cache_header(second[0])) == ("MISS", "HIT")
    assert [c.text for c in second] == [c.text for c in first]
    assert [c.response_id for c in second] == [c.response_id for c in first]


def test_rate_limit_reaches_the_sdk_as_client_error(client, prompt):
    fault = types.GenerateContentConfig(
        http_options=types.HttpOptions(headers={"x-mock-status": "429"})
    )

    with pytest.raises(errors.ClientError) as raised:
        client.models.generate_content(model=MODEL, contents=prompt, config=fault)

    assert raised.value.code == 429
    assert raised.value.message == "mock status 429"


def outcome(kind):
    """A config asking the mock for an answer of this kind (x-mock-outcome)."""
    return types.GenerateContentConfig(
        http_options=types.HttpOptions(headers={"x-mock-outcome": kind})
    )


@pytest.mark.parametrize("kind", ["refusal", "prompt-blocked"])
def test_a_safety_blocked_answer_is_not_stored(client, prompt, kind):
    first = client.models.generate_content(model=MODEL, contents=prompt, config=outcome(kind))
    second = client.models.generate_content(model=MODEL, contents=prompt, config=outcome(kind))

    assert (cache_header(first), cache_header(second)) == ("MISS", "MISS")
    if kind == "refusal":
        assert first.candidates[0].finish_reason == types.FinishReason.SAFETY
    else:
        assert first.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    assert first.text is None


@pytest.mark.parametrize("kind", ["refusal", "prompt-blocked", "partial"])
def test_a_safety_blocked_or_unfinished_stream_is_not_stored(client, prompt, kind):
    def blocked_stream():
        return list(
            client.models.generate_content_stream(
                model=MODEL, contents=prompt, config=outcome(kind)
            )
        )

    first, second = blocked_stream(), blocked_stream()

    assert (cache_header(first[0]), cache_header(second[0])) == ("MISS", "MISS")
    last = first[-1]
    if kind == "refusal":
        assert last.candidates[0].finish_reason == types.FinishReason.SAFETY
    elif kind == "prompt-blocked":
        assert last.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    else:
        assert last.candidates[0].finish_reason is None
