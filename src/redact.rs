//! The one place secrets are masked before text leaves the process (logs, `check-config`,
//! error bodies): passwords inside URLs (`redis://:pw@h:1/0`, `postgres://user:pw@host/db`,
//! `?password=`), and values named like secrets in free text.

/// What a masked secret is replaced with.
pub const MASK: &str = "***";

/// Query parameters whose value is a password (Postgres `password`/`sslpassword`, the `redis`
/// crate's `pass`/`password` on `unix://` URLs).
const SECRET_PARAMS: [&str; 4] = ["password", "sslpassword", "pass", "pwd"];

/// Key names whose values are secrets wherever they appear in a config.
const SECRET_KEYS: [&str; 5] = [
    "api_key",
    "secret_key",
    "password",
    "token",
    "authorization",
];

/// `url` with its password (the part of the userinfo after `:`) and password query parameters
/// masked; scheme, user, hosts, path and other parameters are kept.
pub fn url(url: &str) -> String {
    let mut out = match url.find("://") {
        Some(scheme_end) => {
            let (head, rest) = url.split_at(scheme_end + 3);
            format!("{head}{}", mask_userinfo(rest))
        }
        None => url.to_owned(),
    };
    mask_query(&mut out);
    out
}

/// `text` with every URL in it passed through [`url`]; for error messages that may quote one.
pub fn urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[sep..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .map_or(rest.len(), |i| sep + i);
        out.push_str(&rest[..start]);
        out.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    mask_query(&mut out);
    out
}

/// Whether a config key (the last segment of a key path such as `upstream.api_key`) holds a
/// secret, so that its value must never be repeated.
pub fn is_secret_key(path: &str) -> bool {
    let key = path
        .rsplit(['.', '['])
        .next()
        .unwrap_or(path)
        .trim_end_matches(']')
        .to_ascii_lowercase();
    SECRET_KEYS
        .iter()
        .any(|k| key == *k || key.ends_with(&format!("_{k}")))
}

/// `text` with every quoted part (`"..."`, `` `...` ``) masked but for the key path `path`
/// itself: serde's messages quote the offending value (``invalid type: string "sk-...", expected
/// u16``), and toml's add ``in `upstream.api_key` ``.
pub fn quoted(text: &str, path: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open: Option<char> = None;
    let mut inside = String::new();
    for c in text.chars() {
        match open {
            Some(q) if c == q => {
                out.push_str(if inside == path { &inside } else { MASK });
                out.push(c);
                open = None;
                inside.clear();
            }
            Some(_) => inside.push(c),
            None => {
                out.push(c);
                if matches!(c, '"' | '`') {
                    open = Some(c);
                }
            }
        }
    }
    if open.is_some() {
        // An unterminated quote: what follows it may be the secret itself.
        out.push_str(MASK);
    }
    out
}

/// A TOML syntax error as `line L, column C: message`, without the parser's copy of the source
/// line: that line may be `api_key = "sk-..."` or a URL with a password.
pub fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = urls_in(error.message().trim());
    let Some(before) = error.span().and_then(|span| text.get(..span.start)) else {
        return message;
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: {message}")
}

/// A typed-field error message for the key at `path`, its value masked when the key holds a
/// secret and any URL's password masked everywhere.
pub fn field_message(path: &str, message: &str) -> String {
    let message = urls_in(message);
    if is_secret_key(path) {
        quoted(&message, path)
    } else {
        message
    }
}

/// `rest` (a URL after `scheme://`) with the password of its userinfo masked.
fn mask_userinfo(rest: &str) -> String {
    // The userinfo ends at the last `@` of the authority; a password holding an unescaped `/`,
    // `?` or `#` moves that `@` past the authority's apparent end, so fall back to the last `@`
    // of all (masking too much rather than too little).
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@').or_else(|| rest.rfind('@')) else {
        return rest.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}:{MASK}{}", &userinfo[..colon], &rest[at..]),
        None => rest.to_owned(),
    }
}

/// Masks the values of password query parameters in place.
fn mask_query(text: &mut String) {
    for param in SECRET_PARAMS {
        let mut from = 0;
        while let Some(found) = text[from..].find(&format!("{param}=")) {
            let key_start = from + found;
            let value_start = key_start + param.len() + 1;
            let preceded_ok = text[..key_start]
                .chars()
                .next_back()
                .is_some_and(|c| matches!(c, '?' | '&' | ' ' | ';'));
            let value_end = text[value_start..]
                .find(|c: char| {
                    matches!(c, '&' | '#' | ' ' | '"' | '\'' | '`') || c.is_whitespace()
                })
                .map_or(text.len(), |i| value_start + i);
            if preceded_ok && text[value_start..value_end] != *MASK {
                text.replace_range(value_start..value_end, MASK);
                from = value_start + MASK.len();
            } else {
                from = value_end.max(value_start);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_are_masked_and_hosts_kept() {
        assert_eq!(url("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(url("redis://user:pw@h:1/0"), "redis://user:***@h:1/0");
        assert_eq!(url("rediss://:pw@h:1"), "rediss://:***@h:1");
        assert_eq!(
            url("redis-cluster://:pw@10.0.0.1:7000,10.0.0.2:7001"),
            "redis-cluster://:***@10.0.0.1:7000,10.0.0.2:7001"
        );
        assert_eq!(
            url("redis-sentinel://:pw@a:1,b:2/0#m"),
            "redis-sentinel://:***@a:1,b:2/0#m"
        );
        assert_eq!(
            url("redis+unix:///run/redis.sock?db=1&pass=pw"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
    }

    #[test]
    fn postgres_passwords_are_masked_in_userinfo_and_query() {
        assert_eq!(
            url("postgres://user:pw@host/db"),
            "postgres://user:***@host/db"
        );
        assert_eq!(
            url("postgresql://user@host/db?sslmode=require&password=pw"),
            "postgresql://user@host/db?sslmode=require&password=***"
        );
    }

    #[test]
    fn passwords_with_url_delimiters_are_still_masked() {
        for raw in [
            "redis://:p/w@h:1/0",
            "redis://:p#w@h:1/0",
            "postgres://u:p?w@host/db",
            "redis://:p@w@h:1/0",
        ] {
            let shown = url(raw);
            assert!(!shown.contains("p/w") && !shown.contains("p#w"), "{shown}");
            assert!(!shown.contains("p?w") && !shown.contains("p@w"), "{shown}");
            assert!(shown.contains(MASK), "{shown}");
        }
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for plain in [
            "redis://127.0.0.1:6379/0",
            "redis://user@h:1/0",
            "redis-sentinel://a:1,b:2/0#m",
            "unix:///tmp/redis.sock",
            "sqlite://deja.db?mode=rwc",
            "sqlite::memory:",
            "https://api.lingyiwanwu.com/v1",
        ] {
            assert_eq!(url(plain), plain);
        }
    }

    #[test]
    fn urls_inside_messages_are_masked() {
        let text = "cannot connect to postgres://deja:hunter2@db:5432/deja (refused); \
                    also `redis://:hunter2@h:1/0`";
        let shown = urls_in(text);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.starts_with("cannot connect to postgres://deja:***@db:5432/deja "));
        assert!(shown.ends_with("`redis://:***@h:1/0`"), "{shown}");
    }

    #[test]
    fn secret_key_names_are_recognised_in_key_paths() {
        for path in [
            "upstream.api_key",
            "store.secret_key",
            "redis.password",
            "routes[0].targets[1].api_key",
            "DEJA__UPSTREAM__API_KEY",
        ] {
            assert!(is_secret_key(path), "{path}");
        }
        for path in ["upstream.timeout", "server.listen", "routes[0]"] {
            assert!(!is_secret_key(path), "{path}");
        }
    }

    #[test]
    fn quoted_values_are_masked() {
        let path = "upstream.api_key";
        assert_eq!(
            quoted(r#"invalid type: string "sk-live-1", expected u16"#, path),
            r#"invalid type: string "***", expected u16"#
        );
        assert_eq!(
            quoted("invalid type: integer `5`\nin `upstream.api_key`", path),
            "invalid type: integer `***`\nin `upstream.api_key`"
        );
        assert_eq!(quoted("unterminated \"sk-live", path), "unterminated \"***");
    }
}
