"""The official OpenAI Python SDK, default arguments, against `eliza-cloud serve` (SPEC §9)."""
import os
import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["ELIZA_BASE_URL"], api_key=os.environ["ELIZA_KEY"])

ids = [m.id for m in client.models.list().data]
assert "gpt-4o-mini" in ids and "text-embedding-3-small" in ids, ids
assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"

whole = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
)
text = whole.choices[0].message.content
assert text and whole.usage.completion_tokens > 0, whole

parts, usage = [], None
for chunk in client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Hello"}],
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices:
        parts.append(chunk.choices[0].delta.content or "")
    if chunk.usage:
        usage = chunk.usage
assert "".join(parts) == text, (parts, text)
assert usage and usage.completion_tokens == whole.usage.completion_tokens, usage

plain = "".join(
    (c.choices[0].delta.content or "")
    for c in client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    if c.choices
)
assert plain == text

# The SDK asks for base64 by default and decodes it; it must equal the float answer.
b64 = client.embeddings.create(model="text-embedding-3-small", input="hello world")
floats = client.embeddings.create(
    model="text-embedding-3-small", input="hello world", encoding_format="float"
)
assert len(b64.data[0].embedding) == 1536
assert all(abs(a - b) < 1e-6 for a, b in zip(b64.data[0].embedding, floats.data[0].embedding))

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("an unknown model was answered")
except openai.NotFoundError as e:
    assert e.status_code == 404 and e.body["param"] == "model", e.body

try:
    OpenAI(base_url=os.environ["ELIZA_BASE_URL"], api_key="ek_live_wrong").models.list()
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401

print(f"python openai {openai.__version__}: models, chat (whole, streamed), embeddings, errors: ok")
