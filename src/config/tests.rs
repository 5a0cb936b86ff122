use std::time::Duration;

use secrecy::ExposeSecret;

use super::*;

fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_toml_with_env(text, "test.toml", &vars)
}

#[test]
fn embedded_defaults_are_valid_and_complete() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.max_body_bytes, 4 * 1024 * 1024);
    assert_eq!(c.upstream.base_url, "https://api.lingyiwanwu.com/v1");
    assert_eq!(c.upstream.timeout, Duration::from_secs(60));
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].name, "default");
    assert_eq!(c.routes[0].retry.attempts, 0);
    assert_eq!(
        c.routes[0].retry.on_status_codes,
        vec![429, 500, 502, 503, 504]
    );
    assert!(c.upstream.api_key.is_none());
    assert!(c.redis.url.is_none());
}

#[test]
fn the_issue_example_parses() {
    let c = load(
        r#"
        [server]
        listen = "127.0.0.1:9090"
        [upstream]
        base_url = "https://api.lingyiwanwu.com/v1"
        api_key = "sk-file"
        timeout = "60s"
        [[routes]]
        name = "default"
        models = ["*"]
        [routes.retry]
        attempts = 3
        on_status_codes = [429, 500, 502, 503, 504]
        base_delay = "1s"
        max_delay = "30s"
        "#,
        &[("YI_API_KEY", "sk-env")],
    )
    .unwrap();
    assert_eq!(c.server.listen.port(), 9090);
    assert_eq!(c.routes[0].retry.attempts, 3);
    assert_eq!(c.routes[0].retry.max_delay, Duration::from_secs(30));
    assert_eq!(
        c.upstream.api_key.unwrap().expose_secret(),
        "sk-file",
        "file wins over YI_API_KEY"
    );
}

#[test]
fn environment_overrides_the_file() {
    let c = load(
        "[server]\nlisten = \"127.0.0.1:1\"\n",
        &[
            ("DEJA__SERVER__LISTEN", "0.0.0.0:8181"),
            ("DEJA__SERVER__MAX_BODY_BYTES", "1024"),
            ("DEJA__UPSTREAM__BASE_URL", "http://127.0.0.1:9/v1"),
            ("DEJA__UPSTREAM__API_KEY", "sk-override"),
            ("DEJA__REDIS__URL", "redis://127.0.0.1:6379/0"),
            ("UNRELATED", "x"),
        ],
    )
    .unwrap();
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8181");
    assert_eq!(c.server.max_body_bytes, 1024);
    assert_eq!(c.upstream.base_url, "http://127.0.0.1:9/v1");
    assert_eq!(c.upstream.api_key.unwrap().expose_secret(), "sk-override");
    assert_eq!(c.redis.url.as_deref(), Some("redis://127.0.0.1:6379/0"));
}

#[test]
fn yi_api_key_fills_a_missing_key() {
    let c = load("", &[("YI_API_KEY", "sk-yi")]).unwrap();
    assert_eq!(c.upstream.api_key.unwrap().expose_secret(), "sk-yi");
}

#[test]
fn errors_name_the_key_path() {
    let err = load(
        "[[routes]]\nname = \"a\"\n[routes.retry]\nattempts = -2\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string().split(':').next(),
        Some("routes[0].retry.attempts"),
        "{err}"
    );

    let err = load("[server]\nlisen = \"x\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("server") && err.contains("lisen"), "{err}");

    let err = load("[upstream]\ntimeout = \"soon\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("upstream.timeout"), "{err}");

    let err = load("[server]\nlisten = \"nowhere\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("server.listen"), "{err}");
}

#[test]
fn validation_reports_every_broken_rule() {
    let err = load(
        r#"
        [server]
        max_body_bytes = 0
        [upstream]
        base_url = "ftp://example.com"
        [redis]
        url = "nonsense://"
        [cache]
        verify_max_per_second = -1
        verify_min_similarity = 2
        [[routes]]
        name = "chat bot"
        models = []
        [routes.cache]
        verify_sample_rate = 1.5
        [routes.retry]
        attempts = 11
        on_status_codes = [42]
        base_delay = "5s"
        max_delay = "1s"
        [[routes]]
        name = "default"
        [[routes]]
        name = "default"
        "#,
        &[],
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "server.max_body_bytes must be above 0",
        "upstream.base_url must be an http(s) URL",
        "redis.url is not a Redis URL",
        "routes[0].name must be 1-64 characters",
        "routes[0].models must list at least one glob",
        "routes[0].retry.attempts must be at most 10, got 11",
        "routes[0].retry.on_status_codes[0] must be an HTTP status (100-599), got 42",
        "routes[0].retry.base_delay (5s) must not exceed max_delay (1s)",
        "routes[2].name `default` is used by an earlier route",
        "cache.verify_max_per_second must be a number >= 0, got -1",
        "cache.verify_min_similarity must be within 0..=1, got 2",
        "routes[0].cache.verify_sample_rate must be within 0..=1, got 1.5",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
}

#[test]
fn redis_urls_name_their_topology_and_bad_ones_say_why() {
    for url in [
        "redis://127.0.0.1:6379/0",
        "redis-cluster://10.0.0.1:7000,10.0.0.2:7001",
        "redis-sentinel://:pw@10.0.0.1:26379,10.0.0.2/1#cache",
    ] {
        let c = load(&format!("[redis]\nurl = \"{url}\"\n"), &[]).unwrap();
        assert_eq!(c.redis.url.as_deref(), Some(url));
    }
    let err = load(
        "[redis]\nurl = \"redis-sentinel://:hunter2@10.0.0.1:26379\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("redis.url is not a Redis URL: a Sentinel URL names its master after `#`"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2"),
        "the password stays out of the message: {err}"
    );
}

#[test]
fn a_default_route_is_appended_after_named_ones() {
    let c = load("[[routes]]\nname = \"yi\"\nmodels = [\"yi-*\"]\n", &[]).unwrap();
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["yi", "default"]);
    assert!(c.routes[0].matches_model("yi-lightning"));
    assert!(!c.routes[0].matches_model("gpt-4o"));
}

#[test]
fn debug_output_never_shows_the_key() {
    let c = load("", &[("YI_API_KEY", "sk-very-secret")]).unwrap();
    assert!(!format!("{c:?}").contains("sk-very-secret"));
}

#[test]
fn debug_output_never_shows_a_database_or_redis_password() {
    let c = load(
        "[upstream]\nbase_url = \"https://user:up-pw@api.example.com/v1\"\n\
         [redis]\nurl = \"redis-sentinel://:redis-pw@127.0.0.1:26379,127.0.0.1:26380/0#m\"\n\
         [store]\nurl = \"postgres://deja:pg-pw@127.0.0.1/deja?password=pg-pw2\"\n",
        &[("DEJA_SECRET_KEY", &"ab".repeat(32))],
    )
    .unwrap();
    let shown = format!("{c:?}");
    for secret in ["up-pw", "redis-pw", "pg-pw", &"ab".repeat(32)] {
        assert!(!shown.contains(secret), "`{secret}` in {shown}");
    }
    assert!(
        shown.contains("postgres://deja:***@127.0.0.1/deja"),
        "{shown}"
    );
    assert!(
        shown.contains("redis-sentinel://:***@127.0.0.1:26379"),
        "{shown}"
    );
}

#[test]
fn syntax_and_field_errors_never_repeat_a_secret() {
    for text in [
        // The parser's own message would quote these lines.
        "[upstream]\napi_key = \"sk-live-secret\ntimeout = \"5s\"\n",
        "[upstream]\napi_key = \"sk-live-secret\" extra\n",
        "[store]\nurl = \"postgres://u:sk-live-secret@h/db\" = 1\n",
        // serde's message would quote the value.
        "[store]\nsecret_key = [\"sk-live-secret\"]\n",
        "[upstream]\ntimeout = \"postgres://u:sk-live-secret@h/db\"\n",
    ] {
        let err = load(text, &[]).unwrap_err().to_string();
        assert!(!err.contains("sk-live-secret"), "{err}");
        assert!(err.contains("line ") || err.contains('.'), "{err}");
    }
    let err = load("[upstream]\napi_key = \"sk-live-secret\ntimeout = 1\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2, column"),
        "the position is kept: {err}"
    );
    let err = load(
        "[store]\nurl = \"postgress://u:sk-live-secret@h/db\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("postgress://u:***@h/db"), "{err}");
}

#[test]
fn new_limits_have_defaults_and_must_be_above_zero() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.body_read_timeout, Duration::from_secs(30));
    assert_eq!(c.server.max_header_bytes, 64 * 1024);
    assert_eq!(c.upstream.max_response_bytes, 16 * 1024 * 1024);
    assert_eq!(c.log.max_body_bytes, 64 * 1024);
    let err = load(
        "[server]\nheader_read_timeout = \"0s\"\nbody_read_timeout = \"0s\"\nmax_header_bytes = 0\n\
         [upstream]\nmax_response_bytes = 0\n[log]\nmax_body_bytes = 0\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    for key in [
        "server.header_read_timeout",
        "server.body_read_timeout",
        "server.max_header_bytes",
        "upstream.max_response_bytes",
        "log.max_body_bytes",
    ] {
        assert!(err.contains(&format!("{key} must be above 0")), "{err}");
    }
}

#[test]
fn auth_is_required_by_default_only_beyond_loopback() {
    let local = load("", &[]).unwrap();
    assert!(!local.server.auth_required());
    let open = load("[server]\nlisten = \"0.0.0.0:8080\"\n", &[]).unwrap();
    assert!(open.server.auth_required());
    let forced = load("[server]\nrequire_auth = true\n", &[]).unwrap();
    assert!(forced.server.auth_required());
    let off = load(
        "[server]\nlisten = \"0.0.0.0:8080\"\nrequire_auth = false\n",
        &[],
    )
    .unwrap();
    assert!(!off.server.auth_required());
    let bad = load(
        "[store]\nurl = \"mysql://x\"\nsecret_key = \"short\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("store.url must start with sqlite: or postgres://"),
        "{bad}"
    );
    assert!(
        bad.contains("store.secret_key (or DEJA_SECRET_KEY) must be 64 hex characters"),
        "{bad}"
    );
    let from_env = load("", &[("DEJA_SECRET_KEY", &"ab".repeat(32))]).unwrap();
    assert!(from_env.store.secret_key.is_some());
}

#[test]
fn the_example_file_shows_every_default_as_the_default() {
    let example = load(include_str!("../../deja.example.toml"), &[]).unwrap();
    let defaults = load("", &[]).unwrap();
    for (shown, default) in example.sections().iter().zip(defaults.sections().iter()) {
        assert_eq!(
            shown, default,
            "deja.example.toml sets a value that is not the default"
        );
    }
}
