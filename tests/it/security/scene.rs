//! The rig every attack runs in: a real deja with `require_auth`, a SQLite store holding two
//! tenants (`acme`, `globex`) with admin and inference keys, a provider stand-in as `[upstream]`
//! and an attacker stand-in that records whatever reaches it.

use deja::store::Store;
use deja::store::keys::Scope;
use serde_json::{Value, json};

use crate::common::{self, ChatReply, Endpoint, Gateway, Upstream, config, question};

pub const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// The operator's provider key (`[upstream] api_key` in `common::config`).
pub const OPERATOR_KEY: &str = "sk-provider-test";
/// acme's provider credential, stored in a virtual key.
pub const ACME_SECRET: &str = "sk-acme-provider-credential-0001";

pub struct Tenant {
    pub admin: String,
    pub inference: String,
}

pub struct Scene {
    pub gw: Gateway,
    pub provider: Upstream,
    pub attacker: Upstream,
    pub store: Store,
    pub acme: Tenant,
    pub globex: Tenant,
    pub operator: String,
    _dir: tempfile::TempDir,
}

/// A scene whose `[security]`, routes and other sections are `extra` (`ATTACKER` is replaced by
/// the attacker's `host:port`, `PROVIDER` by the provider's base URL).
pub async fn scene(extra: &str) -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = crate::common::sqlite_store(dir.path()).await;
    let (acme, globex) = (tenant(&store, "acme").await, tenant(&store, "globex").await);
    let operator = store.create_key("ops", Scope::Operator).await.unwrap().1;
    let (provider, attacker) = (Upstream::spawn().await, Upstream::spawn().await);
    let extra = extra
        .replace(
            "ATTACKER",
            attacker
                .url
                .trim_start_matches("http://")
                .trim_end_matches("/v1"),
        )
        .replace("PROVIDER", &provider.url);
    let text = format!(
        "[store]\nurl = \"{url}\"\nsecret_key = \"{SECRET}\"\n[server]\nrequire_auth = true\n\
         [log]\nbodies = true\n{extra}"
    );
    let config = config(&provider.url, &text);
    // A semantic route shares the binary's one model instead of loading its own.
    let gw = if text.contains("semantic") {
        let gw = Gateway::spawn_with_embedder(config, common::shared_embedder()).await;
        common::until_ready(&gw).await;
        gw
    } else {
        Gateway::spawn(config).await
    };
    Scene {
        gw,
        provider,
        attacker,
        store,
        acme,
        globex,
        operator,
        _dir: dir,
    }
}

async fn tenant(store: &Store, name: &str) -> Tenant {
    Tenant {
        admin: store.create_key(name, Scope::Admin).await.unwrap().1,
        inference: store.create_key(name, Scope::Inference).await.unwrap().1,
    }
}

impl Endpoint for Scene {
    fn base_url(&self) -> &str {
        &self.gw.url
    }
}

impl Scene {
    /// Asks `text` as `key` (`x-portkey-api-key`) with `headers`.
    pub async fn ask_as(&self, key: &str, headers: &[(&str, &str)], text: &str) -> ChatReply {
        let mut all = vec![("x-portkey-api-key", key)];
        all.extend_from_slice(headers);
        common::ask(self, &question(text), &all).await
    }

    /// Calls the control plane as `key`: (status, body).
    pub async fn admin(
        &self,
        method: http::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        common::call(self, method, path, Some(key), body).await
    }

    /// Creates a virtual key of `tenant` holding `secret`; its slug.
    pub async fn virtual_key(&self, admin: &str, secret: &str, extra: Value) -> String {
        let mut body = json!({"name": "yi", "provider": "lingyi", "key": secret});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (status, created) = self
            .admin(http::Method::POST, "/v1/virtual-keys", admin, Some(body))
            .await;
        assert_eq!(status, 200, "{created}");
        created["slug"].as_str().unwrap().to_owned()
    }

    /// Every header value and body the attacker stand-in received, as text.
    pub fn attacker_saw(&self) -> String {
        self.attacker
            .received()
            .iter()
            .map(|r| format!("{:?} {}", r.headers, String::from_utf8_lossy(&r.body)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The code of an OpenAI-shaped error body.
pub fn code(json: &Value) -> &str {
    json["error"]["code"].as_str().unwrap_or_default()
}
