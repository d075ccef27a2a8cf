"""The official `openai` Python client against a running tpow node.

Usage: TPOW_BASE_URL=http://127.0.0.1:PORT/v1 TPOW_MODEL_ID=SmolLM2-135M-Instruct python test_openai_client.py

Checks what an unmodified OpenAI client sees: the model list, a greedy answer,
the same answer streamed (with usage), the receipt the node adds, and that
invalid requests raise the client's BadRequestError. Exits non-zero on failure.
"""

import os
import sys

import blake3
import openai


def main() -> int:
    base_url = os.environ["TPOW_BASE_URL"]
    model = os.environ["TPOW_MODEL_ID"]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)

    ids = [m.id for m in client.models.list()]
    assert model in ids, f"{model} not in {ids}"

    messages = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, temperature=0, max_tokens=16
    )
    whole = raw.parse()
    text = whole.choices[0].message.content
    assert text and "Paris" in text, repr(text)
    assert whole.choices[0].finish_reason in ("stop", "length"), whole.choices[0].finish_reason
    usage = whole.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
    assert 1 <= usage.completion_tokens <= 16, usage
    # The receipt: extra field in the body and headers; the response hash is
    # BLAKE3 of the content.
    receipt = whole.model_extra["tpow"]
    assert receipt["response_hash"] == blake3.blake3(text.encode()).hexdigest(), receipt
    assert raw.headers["x-tpow-signature"] == receipt["signature"]
    assert len(bytes.fromhex(receipt["signature"])) == 64

    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, finish, streamed_usage, last = [], None, None, None
    for chunk in stream:
        last = chunk
        if chunk.choices:
            delta = chunk.choices[0].delta
            if delta.content:
                parts.append(delta.content)
            if chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        if chunk.usage:
            streamed_usage = chunk.usage
    streamed = "".join(parts)
    assert streamed == text, (streamed, text)
    assert finish == whole.choices[0].finish_reason, finish
    assert streamed_usage is not None and streamed_usage.completion_tokens == usage.completion_tokens, streamed_usage
    assert last.model_extra["tpow"]["response_hash"] == blake3.blake3(streamed.encode()).hexdigest()

    for bad, what in [
        (dict(model=model, messages=[]), "empty messages"),
        (dict(model="no-such-model", messages=messages), "unknown model"),
        (dict(model=model, messages=messages, temperature=5), "temperature"),
    ]:
        try:
            client.chat.completions.create(**bad)
        except openai.BadRequestError as e:
            assert e.status_code == 400
            assert e.body and e.body.get("message"), e.body
        else:
            raise AssertionError(f"{what}: accepted")

    print(f"openai {openai.__version__}: ok; answer {text!r}; usage {usage.prompt_tokens}+{usage.completion_tokens}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
