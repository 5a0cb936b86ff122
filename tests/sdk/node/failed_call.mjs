// A chat call through Portkey's Node SDK whose retries end in a 503 at deja: the SDK re-sends a
// 5xx once unless the answer carries x-portkey-request-id, so the provider stand-in counts how
// many times the request really went out. Prints {status, requestId}.
import { Portkey } from 'portkey-ai';

const [baseURL, config] = process.argv.slice(2);
const portkey = new Portkey({ apiKey: 'unused-on-deja', baseURL, config });
const out = {};
try {
  await portkey.chat.completions.create({
    messages: [{ role: 'user', content: '介绍一下AI网关的作用' }],
    model: 'yi-lightning',
  });
  out.status = 200;
} catch (e) {
  out.status = e.status ?? null;
  const headers = e.headers ?? {};
  out.requestId = typeof headers.get === 'function'
    ? headers.get('x-portkey-request-id')
    : headers['x-portkey-request-id'] ?? null;
}
console.log(JSON.stringify(out));
