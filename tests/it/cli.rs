//! The `deja` binary itself: `check-config` exit codes, and `serve` on embedded defaults with
//! environment overrides, JSON log lines and a clean exit on SIGTERM.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::upstream::{DONE, chunk, event};
use common::{Reply, Upstream, ask, deja, free_port, question, streamed};

#[test]
fn serve_without_the_model_exits_and_names_the_fetch_script() {
    let out = deja(&std::env::temp_dir())
        .args(["serve"])
        .env("DEJA__SERVER__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("models/fetch.sh"), "{text}");
}

#[test]
fn check_config_accepts_the_example_and_names_bad_keys() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deja.example.toml");
    let out = deja(&std::env::temp_dir())
        .args(["check-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[routes]]\nname = \"a\"\n[routes.retry]\nattempts = 12\non_status_codes = [700]\n",
    )
    .unwrap();
    let out = deja(&std::env::temp_dir())
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes[0].retry.attempts must be at most 10, got 12"),
        "{err}"
    );
    assert!(err.contains("routes[0].retry.on_status_codes[0]"), "{err}");

    let out = deja(&std::env::temp_dir())
        .args(["check-config", "--config", "/nonexistent/deja.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));

    let out = deja(&std::env::temp_dir())
        .args(["check-config"])
        .env("DEJA__SERVER__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("server.listen"));
}

#[tokio::test]
async fn serve_runs_on_defaults_with_env_overrides_and_stops_on_sigterm() {
    let upstream = Upstream::spawn().await;
    let port = free_port();
    // Its own working directory: the default store (deja.db) is created there, never shared
    // with another run.
    let dir = tempfile::tempdir().unwrap();
    let mut child = deja(dir.path())
        .args(["serve", "--log-format", "json"])
        .env("DEJA__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("DEJA__UPSTREAM__BASE_URL", &upstream.url)
        .env("YI_API_KEY", "sk-from-yi-env")
        // Embedded defaults use the semantic tier; the model lives in the repository's models/.
        .envs(common::model_env())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    // The port answers at once (503 `starting` while the model loads); ready means serving.
    common::until_ready(&url).await;
    assert_eq!(ask(&url, &question("hi"), &[]).await.status, 200);
    assert_eq!(
        upstream.received()[0].headers["authorization"],
        "Bearer sk-from-yi-env"
    );
    // A look-alike with the opposite action: refused by a guard, logged by id only.
    let mut refused_id = String::new();
    for text in ["怎么取消自动续费", "怎么开启自动续费"] {
        let reply = ask(&url, &question(text), &[]).await;
        assert_eq!(reply.cache(), "MISS");
        refused_id = reply.header("x-request-id").unwrap().to_owned();
    }
    // A stream: its request's span lasts until the stream has ended.
    let words = event(&chunk(
        serde_json::json!({"content": "streamed"}),
        Some("stop"),
    ));
    upstream.script([Reply::sse(&[words, DONE.to_owned()], None)]);
    let stream = ask(&url, &streamed("stream me"), &[]).await;
    assert_eq!(stream.status, 200, "{}", stream.body);
    let stream_id = stream.header("x-request-id").unwrap().to_owned();

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait().map(|s| (s, child)))
        .await
        .unwrap()
        .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);

    let lines: Vec<serde_json::Value> = BufReader::new(status.1.stdout.unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    let request = lines
        .iter()
        .find(|l| l["message"] == "request")
        .unwrap_or_else(|| panic!("no JSON request line in {lines:?}"));
    assert_eq!(request["route"], "default");
    assert_eq!(request["status"], 200);
    assert_eq!(request["attempts"], 1);
    assert!(request["latency_ms"].as_f64().unwrap() > 0.0);
    let refused = lines
        .iter()
        .find(|l| l["message"] == "semantic candidate refused")
        .unwrap_or_else(|| panic!("no refusal line in {lines:?}"));
    let reason = refused["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("verifier "), "{refused}");
    assert_eq!(
        refused["span"]["id"],
        refused_id.as_str(),
        "lines carry their request's id"
    );
    let of_stream = |message: &str| {
        lines
            .iter()
            .position(|l| l["message"] == message && l["span"]["id"] == stream_id.as_str())
            .unwrap_or_else(|| panic!("no {message} line of {stream_id} in {lines:?}"))
    };
    assert!(
        of_stream("request") < of_stream("stream ended"),
        "the stream's span ends after its handler returned"
    );
    for id in ["asked", "stored"] {
        let id = refused[id].as_str().unwrap();
        assert!(
            id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
    }
    let all = lines.iter().map(ToString::to_string).collect::<String>();
    assert!(!all.contains("自动续费"), "a prompt's text was logged");
    assert!(
        !all.contains("sk-from-yi-env"),
        "the provider key was logged"
    );
    assert!(all.contains("shutting down"));
}
