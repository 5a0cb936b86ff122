//! Provider names a config may use, and the OpenAI-compatible base URL each stands for.

/// `(name, base URL)`; `openai-compatible` needs a `custom_host`, `azure-openai` a
/// `resource_name` (or `custom_host`) and a `deployment_id`.
pub const PROVIDERS: &[(&str, &str)] = &[
    ("lingyi", "https://api.lingyiwanwu.com/v1"),
    ("01ai", "https://api.01.ai/v1"),
    ("openai", "https://api.openai.com/v1"),
    ("anthropic", "https://api.anthropic.com/v1"),
    ("azure-openai", ""),
    ("deepseek", "https://api.deepseek.com/v1"),
    ("moonshot", "https://api.moonshot.cn/v1"),
    ("zhipu", "https://open.bigmodel.cn/api/paas/v4"),
    (
        "dashscope",
        "https://dashscope.aliyuncs.com/compatible-mode/v1",
    ),
    ("baichuan", "https://api.baichuan-ai.com/v1"),
    ("siliconflow", "https://api.siliconflow.cn/v1"),
    ("openai-compatible", ""),
];

/// Azure's `api-version` when a target names none.
pub const AZURE_API_VERSION: &str = "2024-10-21";

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
