//! Provider names a config may use, the base URL each stands for, and the wire format it speaks.

use super::adapter::Wire;

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

/// The wire format `provider` speaks (`api_version` applies to Azure).
pub fn wire(provider: &str, api_version: Option<&str>) -> Wire {
    if provider.eq_ignore_ascii_case("anthropic") {
        Wire::Anthropic
    } else if provider.eq_ignore_ascii_case("azure-openai") {
        Wire::Azure {
            api_version: api_version.unwrap_or(AZURE_API_VERSION).to_owned(),
        }
    } else {
        Wire::OpenAi
    }
}

/// Whether `provider` is Azure OpenAI (its URL is made from a resource and a deployment).
pub fn is_azure(provider: &str) -> bool {
    matches!(wire(provider, None), Wire::Azure { .. })
}

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
