"""anthropic, configured by ANTHROPIC_BASE_URL alone."""

import anthropic
import pytest

from conftest import mock_number

MODEL = "claude-sonnet-4-0"


@pytest.fixture
def client(sdk_env):
    return anthropic.Anthropic()


def create(client, prompt, **kwargs):
    """One message: (x-promptgate-cache header, parsed message)."""
    raw = client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": prompt}],
        **kwargs,
    )
    return raw.headers.get("x-promptgate-cache"), raw.parse()


def stream(client, prompt):
    """One streamed message, read to the end: (cache header, text deltas, final message)."""
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": prompt}]
    ) as events:
        deltas = list(events.text_stream)
        return events.response.headers.get("x-promptgate-cache"), deltas, events.get_final_message()


def test_message_parses(client, prompt):
    cache, message = create(client, prompt)

    assert cache == "MISS"
    assert message.role == "assistant"
    assert message.model == MODEL
    (block,) = message.content
    assert block.type == "text"
    mock_number(block.text)
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


def test_repeated_message_is_a_cache_hit(client, prompt):
    first_cache, first = create(client, prompt)
    second_cache, second = create(client, prompt)

    assert (first_cache, second_cache) == ("MISS", "HIT")
    assert second == first


def test_streamed_message_parses(client, prompt):
    cache, deltas, message = stream(client, prompt)

    assert cache == "MISS"
    assert len(deltas) > 1
    text = "".join(deltas)
    mock_number(text)
    assert [block.text for block in message.content] == [text]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


@pytest.mark.stream_cache
def test_repeated_streamed_message_replays_the_stream(client, prompt):
    first_cache, first_deltas, first = stream(client, prompt)
    second_cache, second_deltas, second = stream(client, prompt)

    assert (first_cache, second_cache) == ("MISS", "HIT")
    assert second_deltas == first_deltas
    assert second == first


def test_anthropic_beta_header_is_part_of_the_cache_key(client, prompt):
    def text_with_beta(beta):
        cache, message = create(client, prompt, extra_headers={"anthropic-beta": beta})
        return cache, mock_number(message.content[0].text)

    cache_a, answer_a = text_with_beta("prompt-caching-2024-07-31")
    cache_b, answer_b = text_with_beta("token-efficient-tools-2025-02-19")

    assert (cache_a, cache_b) == ("MISS", "MISS")
    assert answer_a != answer_b
    assert text_with_beta("prompt-caching-2024-07-31") == ("HIT", answer_a)
    assert text_with_beta("token-efficient-tools-2025-02-19") == ("HIT", answer_b)


def test_default_anthropic_beta_header_is_part_of_the_cache_key(sdk_env, prompt):
    plain = anthropic.Anthropic()
    beta = anthropic.Anthropic(default_headers={"anthropic-beta": "output-128k-2025-02-19"})

    plain_cache, plain_message = create(plain, prompt)
    beta_cache, beta_message = create(beta, prompt)

    assert (plain_cache, beta_cache) == ("MISS", "MISS")
    assert beta_message.content != plain_message.content


@pytest.mark.parametrize(
    "status, error",
    [
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ],
)
def test_upstream_error_reaches_the_sdk_as_its_typed_error(sdk_env, prompt, status, error):
    client = anthropic.Anthropic(max_retries=0)

    with pytest.raises(error) as raised:
        create(client, prompt, extra_headers={"x-mock-status": str(status)})

    assert raised.value.status_code == status
    assert raised.value.body["error"]["message"] == f"mock status {status}"
