//! Provider names a config may use, and the OpenAI-compatible base URL each stands for.

/// `(name, base URL)`; `openai-compatible` needs a `custom_host`.
pub const PROVIDERS: &[(&str, &str)] = &[
    ("lingyi", "https://api.lingyiwanwu.com/v1"),
    ("01ai", "https://api.01.ai/v1"),
    ("openai", "https://api.openai.com/v1"),
    ("deepseek", "https://api.deepseek.com/v1"),
    ("moonshot", "https://api.moonshot.cn/v1"),
    ("openai-compatible", ""),
];

/// The base URL of `provider`, if deja knows the name.
pub fn base_url(provider: &str) -> Option<&'static str> {
    PROVIDERS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(provider))
        .map(|(_, url)| *url)
}

/// The known names, for error messages.
pub fn names() -> String {
    PROVIDERS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}
