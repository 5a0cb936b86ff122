//! Providers that do not speak OpenAI's wire format exactly. A target's [`Wire`] (resolved by the
//! policy from its `provider`) says where a call goes below the base URL, which header carries the
//! credential, and how the request and the answer are translated; everything else in deja (the
//! cache, the request log, streaming, fallback) sees OpenAI-shaped bodies only, so an answer from
//! any provider is stored and replayed like any other.

pub mod anthropic;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue, StatusCode};

use super::{Answer, AnswerBody};

/// The chat completions path every adapter translates.
const CHAT: &str = "/chat/completions";

/// A target's wire format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI's (01.AI, DeepSeek, Moonshot, Zhipu, DashScope, ...): sent as is.
    #[default]
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Azure OpenAI: OpenAI's bodies, a deployment URL, `api-version` and an `api-key` header.
    Azure {
        /// `api-version` query parameter.
        api_version: String,
    },
}

impl Wire {
    /// Label for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Azure { .. } => "azure-openai",
        }
    }

    /// The URL of `path` (OpenAI's, such as `/chat/completions`) below `base`.
    pub fn url(&self, base: &str, path: &str) -> String {
        let base = base.trim_end_matches('/');
        match self {
            Self::OpenAi => format!("{base}{path}"),
            Self::Anthropic if path == CHAT => format!("{base}/messages"),
            Self::Anthropic => format!("{base}{path}"),
            Self::Azure { api_version } => format!("{base}{path}?api-version={api_version}"),
        }
    }

    /// The headers that carry the credential the policy bound (`auth` is its
    /// `Authorization: Bearer KEY` form), plus any the provider requires.
    pub fn headers(&self, auth: Option<&HeaderValue>) -> Vec<(HeaderName, HeaderValue)> {
        let key = || {
            let bearer = auth?.to_str().ok()?;
            let mut key = HeaderValue::from_str(bearer.strip_prefix("Bearer ")?).ok()?;
            key.set_sensitive(true);
            Some(key)
        };
        let mut headers = Vec::new();
        match self {
            Self::OpenAi => {
                if let Some(auth) = auth {
                    headers.push((http::header::AUTHORIZATION, auth.clone()));
                }
            }
            Self::Anthropic => {
                headers.push((
                    HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_static(anthropic::VERSION),
                ));
                if let Some(key) = key() {
                    headers.push((HeaderName::from_static("x-api-key"), key));
                }
            }
            Self::Azure { .. } => {
                if let Some(key) = key() {
                    headers.push((HeaderName::from_static("api-key"), key));
                }
            }
        }
        headers
    }

    /// The status retries and fallbacks read: Anthropic's 529 (overloaded) is a 503.
    pub fn status(&self, status: StatusCode) -> StatusCode {
        match self {
            Self::Anthropic if status.as_u16() == 529 => StatusCode::SERVICE_UNAVAILABLE,
            _ => status,
        }
    }

    /// The body to send for an OpenAI-shaped request `body` to `path`.
    pub fn request(&self, path: &str, body: Bytes) -> Bytes {
        match self {
            Self::Anthropic if path == CHAT => anthropic::request(&body).unwrap_or(body),
            _ => body,
        }
    }

    /// The provider's answer to a call to `path`, in OpenAI's shape.
    pub fn answer(&self, path: &str, mut answer: Answer) -> Answer {
        if *self != Self::Anthropic || path != CHAT {
            return answer;
        }
        answer.body = match answer.body {
            AnswerBody::Full(body) => {
                let translated = anthropic::answer(answer.status.is_success(), &body);
                if translated != body {
                    answer.content_type = Some(HeaderValue::from_static("application/json"));
                }
                AnswerBody::Full(translated)
            }
            AnswerBody::Stream(events) => {
                let mut translator = anthropic::StreamTranslator::default();
                let chunks = events
                    .map(move |chunk| chunk.map(|bytes| translator.feed(&bytes)))
                    .filter(|chunk| {
                        std::future::ready(!matches!(chunk, Ok(bytes) if bytes.is_empty()))
                    });
                AnswerBody::Stream(chunks.boxed())
            }
        };
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wire_has_its_url_and_credential_header() {
        let auth = HeaderValue::from_static("Bearer sk-1");
        let azure = Wire::Azure {
            api_version: "2024-10-21".into(),
        };
        assert_eq!(
            azure.url("https://r.openai.azure.com/openai/deployments/d/", CHAT),
            "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            Wire::Anthropic.url("https://api.anthropic.com/v1", CHAT),
            "https://api.anthropic.com/v1/messages"
        );
        let names = |w: &Wire| -> Vec<(String, String)> {
            w.headers(Some(&auth))
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect()
        };
        assert_eq!(names(&azure), [("api-key".into(), "sk-1".into())]);
        assert_eq!(
            names(&Wire::Anthropic),
            [
                ("anthropic-version".into(), anthropic::VERSION.into()),
                ("x-api-key".into(), "sk-1".into())
            ]
        );
        assert_eq!(
            names(&Wire::OpenAi),
            [("authorization".into(), "Bearer sk-1".into())]
        );
        assert!(
            Wire::Anthropic.headers(None).len() == 1,
            "no key without a credential"
        );
        assert_eq!(
            Wire::Anthropic.status(StatusCode::from_u16(529).unwrap()),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
