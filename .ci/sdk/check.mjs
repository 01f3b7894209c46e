// The official OpenAI Node SDK, default arguments, against `eliza-cloud serve` (SPEC §9).
import OpenAI from "openai";
import assert from "node:assert/strict";

const client = new OpenAI({ baseURL: process.env.ELIZA_BASE_URL, apiKey: process.env.ELIZA_KEY });

const ids = (await client.models.list()).data.map((m) => m.id);
assert.ok(ids.includes("gpt-4o-mini"), String(ids));

const whole = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Hello" }],
});
const text = whole.choices[0].message.content;
assert.ok(text && whole.usage.completion_tokens > 0);

let streamed = "";
let usage;
const stream = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Hello" }],
  stream: true,
  stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  if (chunk.choices.length) streamed += chunk.choices[0].delta.content ?? "";
  if (chunk.usage) usage = chunk.usage;
}
assert.equal(streamed, text);
assert.equal(usage.completion_tokens, whole.usage.completion_tokens);

// Node decodes whatever comes back as base64: a server that ignored encoding_format would give
// zero vectors here.
const b64 = await client.embeddings.create({ model: "text-embedding-3-small", input: "hello world" });
const floats = await client.embeddings.create({
  model: "text-embedding-3-small",
  input: "hello world",
  encoding_format: "float",
});
assert.equal(b64.data[0].embedding.length, 1536);
b64.data[0].embedding.forEach((x, i) => assert.ok(Math.abs(x - floats.data[0].embedding[i]) < 1e-6));
assert.ok(b64.data[0].embedding.some((x) => x !== 0));

await assert.rejects(
  client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }),
  (e) => e.status === 404 && e.param === "model",
);

console.log("node openai: models, chat (whole, streamed), embeddings, errors: ok");
