//! Shared test rig: a scriptable upstream stand-in and a real gateway, both on 127.0.0.1:0, and
//! the one way each thing is done against them: [`ask`] a chat completion (a typed
//! [`ChatReply`]), [`call`] the control plane, wait with [`eventually`] (never a fixed sleep for
//! something that can be observed), read [`metric`]s, run the [`deja`] binary.

pub mod postgres;
pub mod redis;
pub mod redis_topology;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use deja::Config;
use deja::config::{CacheMode, EmbeddingConfig};
use deja::embedding::Embedder;
use deja::embedding::onnx::OnnxEmbedder;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use self::redis::free_port;
pub use upstream::{Reply, Upstream};

/// Something served over HTTP at a base URL (`http://127.0.0.1:port`, no trailing slash): a
/// [`Gateway`], a URL, or a test's own rig around one.
pub trait Endpoint {
    fn base_url(&self) -> &str;
}

impl Endpoint for str {
    fn base_url(&self) -> &str {
        self
    }
}

impl Endpoint for String {
    fn base_url(&self) -> &str {
        self
    }
}

impl<T: Endpoint + ?Sized> Endpoint for Arc<T> {
    fn base_url(&self) -> &str {
        (**self).base_url()
    }
}

/// A running gateway; dropped or `stop`ped, it shuts down.
pub struct Gateway {
    pub addr: SocketAddr,
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Endpoint for Gateway {
    fn base_url(&self) -> &str {
        &self.url
    }
}

impl Gateway {
    /// Serves `config` with `deja::run` on an ephemeral loopback port. A semantic config loads
    /// its own model (see [`Gateway::spawn_sharing_model`] for the shared one).
    pub async fn spawn(config: Config) -> Self {
        Self::start(config, None).await
    }

    /// Serves `config` around an embedder already loaded (see [`shared_embedder`]).
    pub async fn spawn_with_embedder(config: Config, embedder: Arc<dyn Embedder>) -> Self {
        Self::start(config, Some(embedder)).await
    }

    /// [`Gateway::spawn`], except that a config whose default cache mode is semantic gets the
    /// model loaded once per binary ([`shared_embedder`]) and is returned only once `/readyz`
    /// says its semantic index is rebuilt.
    pub async fn spawn_sharing_model(config: Config) -> Self {
        if config.cache.default_mode != CacheMode::Semantic {
            return Self::spawn(config).await;
        }
        let gw = Self::spawn_with_embedder(config, shared_embedder()).await;
        let checks = until_ready(&gw).await;
        assert_eq!(checks["checks"]["semantic_index"], "ok", "{checks}");
        assert!(checks["checks"]["embedding_model"].is_string(), "{checks}");
        gw
    }

    async fn start(config: Config, embedder: Option<Arc<dyn Embedder>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let state = match embedder {
            Some(e) => deja::AppState::with_embedder(config, Some(e)).unwrap(),
            None => deja::AppState::new(config).unwrap(),
        };
        let task = tokio::spawn(async move {
            deja::serve(state, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            url: format!("http://{addr}"),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The gateway's `/metrics` text.
    pub async fn scrape_metrics(&self) -> String {
        scrape_metrics(self, "").await
    }

    /// The gateway's `/metrics` text, read with API key `key` (where `require_auth` is on).
    pub async fn scrape_metrics_as(&self, key: &str) -> String {
        scrape_metrics(self, key).await
    }

    /// Signals shutdown; the returned handle finishes when the server has stopped.
    pub fn stop(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A config whose upstream is `upstream_url`, with `extra` TOML appended. Routes cache in
/// `simple` mode unless `extra` says otherwise, so these gateways need no embedding model.
pub fn config(upstream_url: &str, extra: &str) -> Config {
    config_with_mode(upstream_url, "simple", extra)
}

/// [`config`] with another default cache mode.
pub fn config_with_mode(upstream_url: &str, default_mode: &str, extra: &str) -> Config {
    // Each gateway keeps its control plane in memory unless the test names a store.
    let store = if extra.contains("[store]") {
        ""
    } else {
        "[store]\nurl = \"sqlite::memory:\"\n"
    };
    // Without semantic mode anywhere, no model is loaded (deja loads it by default).
    let embedding = if default_mode == "semantic"
        || extra.contains("semantic")
        || extra.contains("[embedding]")
    {
        ""
    } else {
        "[embedding]\nenabled = false\n"
    };
    let text = format!(
        "[upstream]\nbase_url = \"{upstream_url}\"\napi_key = \"sk-provider-test\"\ntimeout = \"5s\"\n\
         {store}{embedding}[cache]\ndefault_mode = \"{default_mode}\"\n{extra}"
    );
    // A busy test machine embeds slowly: the tests ask for semantic hits, not for shedding
    // (the shedding test sets its own bounds).
    let patient: Vec<(String, String)> = if extra.contains("max_queue_wait") {
        Vec::new()
    } else {
        ["MAX_QUEUE_WAIT", "MAX_LOOKUP_WAIT"]
            .iter()
            .map(|k| (format!("DEJA__EMBEDDING__{k}"), "30s".to_owned()))
            .collect()
    };
    Config::from_toml_with_env(&text, "test", &patient).unwrap()
}

/// A `[redis]` section for `url`, with a per-call `timeout` (`"200ms"`) or deja's default.
pub fn redis_section(url: &str, timeout: Option<&str>) -> String {
    let timeout = timeout
        .map(|t| format!("timeout = \"{t}\"\n"))
        .unwrap_or_default();
    format!("[redis]\nurl = \"{url}\"\n{timeout}")
}

/// The real default embedding model, loaded once per test binary and shared by its gateways.
pub fn shared_embedder() -> Arc<dyn Embedder> {
    static EMBEDDER: OnceLock<Arc<OnnxEmbedder>> = OnceLock::new();
    let e = EMBEDDER.get_or_init(|| {
        Arc::new(
            OnnxEmbedder::load(&EmbeddingConfig::default()).expect("run models/fetch.sh first"),
        )
    });
    Arc::clone(e) as Arc<dyn Embedder>
}

/// A file under the repository's `models/` (fetched by `models/fetch.sh`).
pub fn models_path(rel: &str) -> String {
    format!("{}/models/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// The environment that points a `deja` process at the repository's model.
pub fn model_env() -> [(&'static str, String); 2] {
    [
        (
            "DEJA__EMBEDDING__MODEL_DIR",
            models_path("multilingual-e5-small"),
        ),
        (
            "DEJA__EMBEDDING__ONNXRUNTIME_LIB",
            models_path("lib/libonnxruntime.so"),
        ),
    ]
}

/// The `deja` binary, run in `dir` and kept away from a developer's `deja.toml` and keys.
pub fn deja(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deja"));
    cmd.current_dir(dir)
        .env_remove("YI_API_KEY")
        .env_remove("DEJA_SECRET_KEY")
        .env_remove("DEJA_CONFIG")
        // As in `config_with_mode`: semantic hits, not shedding, on a busy test machine.
        .env("DEJA__EMBEDDING__MAX_QUEUE_WAIT", "30s")
        .env("DEJA__EMBEDDING__MAX_LOOKUP_WAIT", "30s");
    cmd
}

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// What a check passed to [`eventually`] returns: `true`, `Some(value)` or `Ok(value)` when the
/// condition holds; otherwise what it saw, for the failure message.
pub trait Ready {
    type Value;
    fn ready(self) -> Result<Self::Value, String>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("false".into()) }
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

impl<T, E: std::fmt::Display> Ready for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Runs `check` every 20 ms until it is ready (see [`Ready`]) and returns its value; panics
/// naming `what` and the last thing seen once `timeout` has passed.
pub async fn eventually<F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> <Fut::Output as Ready>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Ready,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await.ready() {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}; last seen: {last}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `/readyz` at `at` says every tier is ready (connections refused while a process
/// starts are retried) and returns its checks.
pub async fn until_ready(at: &(impl Endpoint + ?Sized)) -> Value {
    let url = format!("{}/readyz", at.base_url());
    eventually(
        &format!("{url} to answer 200"),
        Duration::from_secs(30),
        || {
            let url = url.clone();
            async move {
                match client().get(url).send().await {
                    Ok(res) => {
                        let status = res.status();
                        let checks = res.json::<Value>().await.unwrap_or_default();
                        if status == 200 && checks["status"] == "ready" {
                            Ok(checks)
                        } else {
                            Err(format!("{status}: {checks}"))
                        }
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await
}

/// `GET /readyz` once: (status, checks).
pub async fn readiness(at: &(impl Endpoint + ?Sized)) -> (u16, Value) {
    let res = client()
        .get(format!("{}/readyz", at.base_url()))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Waits (up to `within`, naming `what`) until `/readyz` at `at` says Redis answers.
pub async fn until_redis_ok(at: &(impl Endpoint + ?Sized), what: &str, within: Duration) {
    eventually(what, within, || async {
        let (_, checks) = readiness(at).await;
        if checks["checks"]["redis"] == "ok" {
            Ok(())
        } else {
            Err(checks)
        }
    })
    .await;
}

/// A minimal chat completion body asking `text`.
pub fn question(text: &str) -> Value {
    json!({
        "model": "yi-lightning",
        "messages": [{"role": "user", "content": text}],
    })
}

/// [`question`] asked as a stream.
pub fn streamed(text: &str) -> Value {
    let mut body = question(text);
    body["stream"] = true.into();
    body
}

/// A client that keeps nothing between tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// What a chat completion got back, read to the end.
#[derive(Debug)]
pub struct ChatReply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl ChatReply {
    /// A response header's value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// `x-portkey-cache-status`, or "" when absent.
    pub fn cache(&self) -> &str {
        self.header("x-portkey-cache-status").unwrap_or_default()
    }

    /// `x-deja-similarity` of a semantic hit.
    pub fn similarity(&self) -> Option<f64> {
        self.header("x-deja-similarity").map(|s| s.parse().unwrap())
    }

    /// The body as JSON; a body that is not JSON fails the test.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "a {} body that is not JSON ({e}): {}",
                self.status, self.body
            )
        })
    }

    /// `choices[0].message.content` of a chat completion.
    pub fn content(&self) -> String {
        let body = self.json();
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("no answer text in {body}"))
            .to_owned()
    }
}

/// Posts `body` to `POST /v1/chat/completions` at `at` with `headers` and reads the answer to
/// the end. A request that takes over 30 s fails the test rather than stall the suite.
pub async fn ask(
    at: &(impl Endpoint + ?Sized),
    body: &Value,
    headers: &[(&str, &str)],
) -> ChatReply {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", at.base_url()))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(30))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    ChatReply {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: res.text().await.unwrap(),
    }
}

/// Asks [`question`]`(text)` and returns the cache status of its answer, which must be a 200.
pub async fn cache_of(at: &(impl Endpoint + ?Sized), text: &str) -> String {
    let reply = ask(at, &question(text), &[]).await;
    assert_eq!(reply.status, 200, "{text}: {}", reply.body);
    reply.cache().to_owned()
}

/// Calls the control plane at `at` (`path` from the root) as `key`, with a JSON `body`:
/// (status, body as JSON or null).
pub async fn call(
    at: &(impl Endpoint + ?Sized),
    method: http::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method, format!("{}{path}", at.base_url()));
    if let Some(key) = key {
        req = req.header("x-portkey-api-key", key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A control-plane store in a SQLite file under `dir`, migrated: its URL and handle.
pub async fn sqlite_store(dir: &Path) -> (String, deja::store::Store) {
    let url = format!("sqlite://{}?mode=rwc", dir.join("deja.db").display());
    let store = deja::store::Store::connect_lazy(&url).unwrap();
    store.migrate().await.unwrap();
    (url, store)
}

/// Waits until the request log (`GET /v1/logs`, read with `admin_key`) holds at least `n` rows
/// (its writer is asynchronous) and returns it.
pub async fn until_logged(at: &(impl Endpoint + ?Sized), admin_key: &str, n: usize) -> Value {
    eventually(&format!("{n} log rows"), Duration::from_secs(6), || async {
        let (_, rows) = call(
            at,
            http::Method::GET,
            "/v1/logs?limit=1000",
            Some(admin_key),
            None,
        )
        .await;
        if rows["data"].as_array().map_or(0, Vec::len) >= n {
            Ok(rows)
        } else {
            Err(rows)
        }
    })
    .await
}

/// The `/metrics` text at `at`, read with API key `key` when it is not empty.
pub async fn scrape_metrics(at: &(impl Endpoint + ?Sized), key: &str) -> String {
    let mut req = client().get(format!("{}/metrics", at.base_url()));
    if !key.is_empty() {
        req = req.header("x-portkey-api-key", key);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// Waits until the sample `name{labels}` at `at` is at least `n`; returns how long that took.
pub async fn until_metric(
    at: &(impl Endpoint + ?Sized),
    name: &str,
    labels: &[(&str, &str)],
    n: f64,
) -> Duration {
    let started = Instant::now();
    let what = format!("{name}{labels:?} to reach {n} at {}", at.base_url());
    eventually(&what, Duration::from_secs(10), || async {
        let text = scrape_metrics(at, "").await;
        match metric(&text, name, labels) {
            Some(value) if value >= n => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    started.elapsed()
}

/// Waits until the gateway at `at` has applied `n` replication events of kind `result` (`put`,
/// `del`, `rebuild`) that other gateways published; returns how long that took.
pub async fn until_replicated(at: &(impl Endpoint + ?Sized), result: &str, n: f64) -> Duration {
    until_metric(at, "deja_replica_events_total", &[("result", result)], n).await
}

/// Reads one sample of a Prometheus text exposition: `name{labels} value`, labels in any order.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric_name != name {
                return None;
            }
            let label_text = rest.strip_suffix('}')?;
            let all = labels.iter().all(|(k, v)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            });
            all.then(|| value.parse().ok()).flatten()
        })
}

/// Runs `tests/sdk/node/<script>` under Node (off the async workers) and returns the JSON it
/// printed; a failing script fails the test with its stderr.
pub async fn node_script(script: &str, args: Vec<String>, env: &[(&str, &str)]) -> Value {
    let mut command = Command::new("node");
    command.arg(format!("tests/sdk/node/{script}")).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "node {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
