//! `deja keys`: the store's API keys from the command line.

use std::path::Path;

use crate::cli::KeysAction;
use crate::config::Config;
use crate::store::Store;

/// Runs `action` against the configured store; the text to print.
pub fn run(config: Option<&Path>, action: &KeysAction) -> anyhow::Result<String> {
    let config = Config::load(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Store::connect_lazy(&config.store.url)?;
        store.migrate().await?;
        Ok(match action {
            KeysAction::Create { tenant, scope } => {
                let (key, secret) = store.create_key(tenant, *scope).await?;
                format!(
                    "{secret}\nid {} tenant {} scope {}: shown once; only its hash is stored\n",
                    key.id,
                    key.tenant,
                    key.scope.as_str()
                )
            }
            KeysAction::List => {
                let mut out =
                    String::from("id                 tenant           scope      state\n");
                for key in store.list_keys().await? {
                    let state = if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    out.push_str(&format!(
                        "{:<18} {:<16} {:<10} {state}\n",
                        key.id,
                        key.tenant,
                        key.scope.as_str()
                    ));
                }
                out
            }
            KeysAction::Revoke { id } => {
                store.revoke_key(id).await?;
                format!("revoked {id}\n")
            }
        })
    })
}
