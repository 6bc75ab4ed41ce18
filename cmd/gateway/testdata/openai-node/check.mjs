// Calls scoregate's sample chat model through the gateway with the official OpenAI client for
// Node, as a user would: the gateway's address as base URL and a gateway key as the API key
// (OPENAI_BASE_URL and OPENAI_API_KEY, which the client reads itself). It prints one JSON object
// with what each call returned, for cmd/gateway's tests to check.
//
//   node check.mjs            a chat completion, a streamed one, and an embeddings call
//   node check.mjs stream N   N streamed chat completions one after another (token limits)
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: Number(process.env.OPENAI_MAX_RETRIES ?? 2) });
const model = process.env.OPENAI_MODEL ?? "scoregate-markov";
const messages = [{ role: "user", content: "Tell me about the rabbit and the queen." }];

async function streamed(maxTokens) {
  const stream = await client.chat.completions.create({ model, messages, stream: true, max_tokens: maxTokens });
  let text = "";
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    for (const c of chunk.choices) text += c.delta?.content ?? "";
  }
  return {
    text,
    chunks: chunks.length,
    // Chunks the client did not ask for: a usage chunk (no choices) or a usage member.
    usageChunks: chunks.filter((c) => c.choices.length === 0 || "usage" in c).length,
  };
}

const [mode, n] = process.argv.slice(2);
if (mode === "stream") {
  const out = [];
  for (let i = 0; i < Number(n); i++) {
    const started = Date.now();
    const r = await streamed(Number(process.env.OPENAI_MAX_TOKENS ?? 32));
    out.push({ ms: Date.now() - started, chunks: r.chunks, usageChunks: r.usageChunks });
  }
  console.log(JSON.stringify({ streams: out }));
} else {
  const chat = await client.chat.completions.create({ model, messages, max_tokens: 24 });
  const stream = await streamed(24);
  const emb = await client.embeddings.create({ model, input: "the rabbit and the queen" });
  console.log(JSON.stringify({
    chat: { text: chat.choices[0].message.content, model: chat.model, usage: chat.usage },
    stream,
    embeddings: { dims: emb.data[0].embedding.length, usage: emb.usage },
  }));
}
