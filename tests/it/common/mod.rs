//! Shared test rig: a scriptable upstream stand-in and a real gateway, both on 127.0.0.1:0.

pub mod postgres;
pub mod redis;
pub mod redis_topology;
pub mod upstream;

use std::net::SocketAddr;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use deja::Config;
use deja::config::EmbeddingConfig;
use deja::embedding::Embedder;
use deja::embedding::onnx::OnnxEmbedder;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use upstream::{Reply, Upstream};

/// A running gateway; dropped or `stop`ped, it shuts down.
pub struct Gateway {
    pub addr: SocketAddr,
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Serves `config` with `deja::run` on an ephemeral loopback port.
    pub async fn spawn(config: Config) -> Self {
        Self::start(config, None).await
    }

    /// Serves `config` around an embedder already loaded (see [`shared_embedder`]).
    pub async fn spawn_with_embedder(config: Config, embedder: Arc<dyn Embedder>) -> Self {
        Self::start(config, Some(embedder)).await
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
        self.scrape_metrics_as("").await
    }

    /// The gateway's `/metrics` text, read with API key `key` (where `require_auth` is on).
    pub async fn scrape_metrics_as(&self, key: &str) -> String {
        let mut req = client().get(format!("{}/metrics", self.url));
        if !key.is_empty() {
            req = req.header("x-portkey-api-key", key);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
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
    let text = format!(
        "[upstream]\nbase_url = \"{upstream_url}\"\napi_key = \"sk-provider-test\"\ntimeout = \"5s\"\n\
         {store}[cache]\ndefault_mode = \"{default_mode}\"\n{extra}"
    );
    Config::from_toml_with_env(&text, "test", &[]).unwrap()
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

/// Waits until `/readyz` says the semantic index is rebuilt and the model loaded.
pub async fn wait_ready(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = client()
            .get(format!("{}/readyz", gw.url))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            let checks: serde_json::Value = res.json().await.unwrap();
            assert_eq!(checks["checks"]["semantic_index"], "ok", "{checks}");
            assert!(checks["checks"]["embedding_model"].is_string(), "{checks}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {}",
            res.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal chat completion body.
pub fn chat_body(content: &str) -> String {
    serde_json::json!({
        "model": "yi-lightning",
        "messages": [{"role": "user", "content": content}],
    })
    .to_string()
}

/// A client that keeps nothing between tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Posts a chat completion: (status, `x-portkey-cache-status`, `x-deja-similarity`, body).
pub async fn chat(
    gw: &Gateway,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> (u16, String, Option<String>, String) {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (status, cache, similarity) = (
        res.status().as_u16(),
        header("x-portkey-cache-status").unwrap_or_default(),
        header("x-deja-similarity"),
    );
    (status, cache, similarity, res.text().await.unwrap())
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
pub async fn node_script(
    script: &str,
    args: Vec<String>,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let mut command = std::process::Command::new("node");
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
