//! Secrets never leave the process in text: not in `check-config`'s errors (the TOML parser
//! would quote the offending line), not in the effective configuration logged at start.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use crate::common::deja;

const SECRET: &str = "sk-live-9f8e7d6c5b4a";

#[test]
fn check_config_never_echoes_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // Unterminated string: the parser's message quotes the line.
        format!("[upstream]\napi_key = \"{SECRET}\ntimeout = \"5s\"\n"),
        // Garbage after the value, on the secret's own line.
        format!("[upstream]\napi_key = \"{SECRET}\" # ok\nbase_url = \n"),
        format!("[store]\nurl = \"postgres://deja:{SECRET}@db/deja\" trailing\n"),
        format!("[redis]\nurl = \"redis://:{SECRET}@127.0.0.1:6379/0\"\n[redis]\n"),
        // The wrong type: serde's message quotes the value.
        format!("[store]\nsecret_key = [\"{SECRET}\"]\n"),
        format!("[upstream]\ntimeout = \"redis://:{SECRET}@h:1/0\"\n"),
        // Valid TOML, invalid values: the validation message names the URL.
        format!("[store]\nurl = \"mysql://deja:{SECRET}@db/deja\"\n"),
        format!("[upstream]\nbase_url = \"https://user:{SECRET}@\"\n"),
    ];
    for (i, text) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = deja(dir.path())
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i}: {stderr}");
        assert!(!stderr.trim().is_empty(), "case {i}: no error message");
        assert!(
            !stderr.contains(SECRET),
            "case {i} echoed the secret:\n{stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(SECRET),
            "case {i}"
        );
    }
    // Still useful: the position of a syntax error is kept.
    let path = dir.path().join("bad-0.toml");
    let out = deja(dir.path())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2, column"), "{stderr}");
}

#[test]
fn startup_log_hides_redis_and_postgres_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("deja.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [upstream]\nbase_url = \"http://proxyuser:upstream-hunter2@127.0.0.1:9/v1\"\n\
         api_key = \"sk-provider-hunter2\"\n\
         [redis]\nurl = \"redis://:redis-hunter2@127.0.0.1:6379/0\"\n\
         [store]\nurl = \"postgres://deja:pg-hunter2@127.0.0.1:1/deja?sslpassword=pg-ssl-hunter2\"\n\
         secret_key = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n\
         [cache]\ndefault_mode = \"simple\"\n\
         [[routes]]\nname = \"r\"\n\
         [routes.strategy]\nmode = \"fallback\"\n\
         [[routes.targets]]\ncustom_host = \"http://routeuser:route-hunter2@127.0.0.1:9/v1\"\n\
         api_key = \"sk-route-hunter2\"\n[[routes.targets]]\n\
         [[alerts]]\nname = \"errors\"\nmetric = \"error_ratio\"\nop = \">\"\n\
         threshold = 0.5\nwindow = \"5m\"\nwebhook = \"http://127.0.0.1:9/hooks/webhook-hunter2\"\n",
    )
    .unwrap();
    let mut child = deja(dir.path())
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the log until the line that follows the effective configuration; the process may
    // also end first (its store is unreachable), which ends the lines.
    let mut logged = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let listening = line.contains("deja listening");
        logged.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let logged = logged.join("\n");
    // One line per section.
    let effective: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("effective configuration"))
        .collect();
    assert!(
        effective.len() > 5,
        "no effective configuration lines in:\n{logged}\n{stderr}"
    );
    let effective = effective.join("\n");
    for secret in [
        "upstream-hunter2",
        "sk-provider-hunter2",
        "redis-hunter2",
        "pg-hunter2",
        "pg-ssl-hunter2",
        "0123456789abcdef0123456789abcdef",
        "route-hunter2",
        "sk-route-hunter2",
        "webhook-hunter2",
    ] {
        assert!(!logged.contains(secret), "`{secret}` logged:\n{logged}");
        assert!(!stderr.contains(secret), "`{secret}` on stderr:\n{stderr}");
    }
    // Redacted, not dropped: the operator still sees where deja connects.
    for shown in [
        "redis://:***@127.0.0.1:6379/0",
        "postgres://deja:***@127.0.0.1:1/deja",
        "http://proxyuser:***@127.0.0.1:9/v1",
        "http://routeuser:***@127.0.0.1:9/v1",
    ] {
        assert!(effective.contains(shown), "`{shown}` missing:\n{effective}");
    }
}
