// The tutorial's flow with Portkey's own Node SDK, pointed at deja by baseURL: create a virtual
// key and a retry config through the SDK's control-plane calls, then chat with them, and cache
// through an inline config. Prints one JSON object: what the SDK saw.
import { Portkey } from 'portkey-ai';

const [baseURL, adminKey, apiKey] = process.argv.slice(2);
const out = {};

const admin = new Portkey({ apiKey: adminKey, baseURL });
const vk = await admin.virtualKeys.create({
  name: '01.AI', provider: 'lingyi', key: 'sk-yi-from-the-node-sdk', note: 'tutorial',
});
out.virtualKey = vk.slug;
const cfg = await admin.configs.create({
  name: '01ai retry',
  config: { retry: { attempts: 3, on_status_codes: [429, 500, 502, 503], backoff: 'exponential' } },
});
out.config = cfg.slug;
out.configVersion = cfg.version_id;
const listed = await admin.configs.list();
out.configsListed = listed.total;
const keys = await admin.virtualKeys.list();
out.virtualKeyShown = keys.data[0].key;

// 方法A: the saved config by id, with the virtual key.
const portkey = new Portkey({ apiKey, baseURL, virtualKey: vk.slug, config: cfg.slug });
const retried = await portkey.chat.completions.create({
  messages: [{ role: 'user', content: '介绍一下AI网关的作用' }],
  model: '01-ai/gpt-4',
});
out.retried = { text: retried.choices[0].message.content, headers: retried.getHeaders() };

// 启用缓存: an inline semantic cache config, asked twice and then in other words.
const cache = JSON.stringify({ cache: { mode: 'semantic', ttl: 3600, similarity_threshold: 0.85 } });
const cached = new Portkey({ apiKey, baseURL, virtualKey: vk.slug });
out.cache = [];
for (const question of ['什么是AI网关?', '什么是AI网关?', 'AI网关是什么?']) {
  const r = await cached.chat.completions.create(
    { messages: [{ role: 'user', content: question }], model: '01-ai/gpt-4' },
    { config: cache },
  );
  out.cache.push({ text: r.choices[0].message.content, headers: r.getHeaders() });
}

// Analytics through the SDK's own calls, once the request log (written in batches) holds the
// four chats above.
const window = {
  time_of_generation_min: new Date(Date.now() - 3600_000).toISOString(),
  time_of_generation_max: new Date(Date.now() + 60_000).toISOString(),
};
const graphs = admin.analytics.graphs;
for (let i = 0; i < 100; i++) {
  const r = await graphs.requests(window);
  if (r.summary.total >= 4) break;
  await new Promise((done) => setTimeout(done, 50));
}
out.analytics = {
  requests: await graphs.requests(window),
  byConfig: (await graphs.requests({ ...window, configs: cfg.slug })).summary,
  cacheHitRate: (await graphs.cache_hit_rate(window)).summary,
  cacheLatency: (await graphs.cache_latency(window)).summary,
  latency: (await graphs.latency(window)).summary,
  cost: (await graphs.cost(window)).summary,
  tokens: (await graphs.tokens(window)).summary,
  errorsRate: (await graphs.errors_rate(window)).summary,
  cacheSummary: (await admin.analytics.summary.cache(window)).summary,
};
console.log(JSON.stringify(out));
