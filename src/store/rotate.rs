//! `deja secret-key rotate`: every sealed credential (virtual keys, inline `api_key`s of every
//! saved config version) opened under the current key and sealed again under a new one, in one
//! transaction, so a store is never half under each key. Then the key itself moves: a SQLite
//! store's key file is replaced (the old key kept beside it as `.old` until the operator has a
//! backup); a configured key is printed for the operator to set on every replica.

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;
use sqlx::Row;

use super::seal::{SEALED_PREFIX, Sealer};
use super::{Store, StoreError, secret_file};
use crate::config::Config;

/// Why a rotation stopped; nothing was changed unless it says so.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// No key to rotate from.
    #[error(
        "no secret key to rotate: set [store] secret_key or DEJA_SECRET_KEY (or use a SQLite store, whose key file is made on first start)"
    )]
    NoKey,
    /// A key is not 64 hex characters.
    #[error("{0} is not 64 hex characters")]
    Malformed(&'static str),
    /// The new key is the current one.
    #[error("the new key is the current key")]
    Same,
    /// A stored value did not open under the current key: the wrong key, or a damaged row.
    #[error(
        "{0} does not open under the current secret key; nothing was changed (is this the key the store was sealed with?)"
    )]
    WrongKey(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key file could not be replaced.
    #[error("secret key file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for RotateError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// How many values were sealed again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Virtual keys (deleted ones included: a restore must still open them).
    pub virtual_keys: usize,
    /// Inline `api_key`s in saved config versions.
    pub inline_keys: usize,
}

impl Store {
    /// Opens every sealed value under `old` and seals it under `new`, all or nothing.
    pub async fn reseal(&self, old: &Sealer, new: &Sealer) -> Result<Resealed, RotateError> {
        let mut done = Resealed::default();
        let mut tx = self.begin_write().await?;
        let keys = sqlx::query("SELECT id, sealed FROM virtual_keys")
            .fetch_all(&mut *tx)
            .await?;
        for row in &keys {
            let id: String = row.try_get("id")?;
            let sealed: String = row.try_get("sealed")?;
            let again = old
                .open(&sealed)
                .and_then(|plain| new.seal(&plain))
                .ok_or_else(|| RotateError::WrongKey(format!("virtual key {id}")))?;
            sqlx::query("UPDATE virtual_keys SET sealed = $1 WHERE id = $2")
                .bind(again)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            done.virtual_keys += 1;
        }
        let versions = sqlx::query("SELECT id, body FROM config_versions")
            .fetch_all(&mut *tx)
            .await?;
        for row in &versions {
            let id: String = row.try_get("id")?;
            let body: String = row.try_get("body")?;
            if !body.contains(SEALED_PREFIX) {
                continue;
            }
            let wrong = || RotateError::WrongKey(format!("config version {id}"));
            let mut config: serde_json::Value = serde_json::from_str(&body).map_err(|_| wrong())?;
            let mut count = 0;
            let opened = super::seal::each_inline_key(&mut config, &mut |key| {
                let Some(sealed) = key.strip_prefix(SEALED_PREFIX) else {
                    return true;
                };
                match old.open(sealed).and_then(|plain| new.seal(&plain)) {
                    Some(again) => {
                        *key = format!("{SEALED_PREFIX}{again}");
                        count += 1;
                        true
                    }
                    None => false,
                }
            });
            if !opened {
                return Err(wrong());
            }
            sqlx::query("UPDATE config_versions SET body = $1 WHERE id = $2")
                .bind(config.to_string())
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            done.inline_keys += count;
        }
        tx.commit().await?;
        Ok(done)
    }
}

/// Where the current key comes from.
enum Current {
    /// `[store] secret_key` / `DEJA_SECRET_KEY`.
    Configured(String),
    /// The SQLite store's key file.
    File(PathBuf, String),
}

/// Rotates the store's secret key to `new` (a fresh one when `None`); the text to print.
pub fn run(config: Option<&Path>, new: Option<&str>) -> anyhow::Result<String> {
    let config = Config::load(config)?;
    let current = match (
        &config.store.secret_key,
        secret_file::path_for(&config.store.url),
    ) {
        (Some(key), _) => Current::Configured(key.expose_secret().to_owned()),
        (None, Some(path)) if path.exists() => {
            let (key, _) = secret_file::load_or_create(&path)?;
            Current::File(path, key)
        }
        _ => return Err(RotateError::NoKey.into()),
    };
    let old_key = match &current {
        Current::Configured(key) | Current::File(_, key) => key.clone(),
    };
    let new_key = new.map_or_else(secret_file::fresh_key, |k| k.trim().to_owned());
    if new_key.eq_ignore_ascii_case(&old_key) {
        return Err(RotateError::Same.into());
    }
    let old = Sealer::from_hex(&old_key).ok_or(RotateError::Malformed("the current key"))?;
    let sealer = Sealer::from_hex(&new_key).ok_or(RotateError::Malformed("the new key"))?;
    // The new key is on disk before the store is changed: a crash in between leaves both keys.
    let staged = match &current {
        Current::File(path, _) => Some(stage(path, &new_key)?),
        Current::Configured(_) => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = runtime.block_on(async {
        let store = Store::connect_lazy(&config.store.url)?;
        store.migrate().await?;
        store.reseal(&old, &sealer).await
    });
    let done = match done {
        Ok(done) => done,
        Err(e) => {
            if let Some(staged) = &staged {
                let _ = std::fs::remove_file(staged);
            }
            return Err(e.into());
        }
    };
    let summary = format!(
        "resealed {} virtual keys and {} inline api_keys in saved configs under the new key\n",
        done.virtual_keys, done.inline_keys
    );
    Ok(match (current, staged) {
        (Current::File(path, _), Some(staged)) => {
            let old_path = suffixed(&path, ".old");
            let file = |source| RotateError::File {
                path: path.clone(),
                source,
            };
            std::fs::rename(&path, &old_path).map_err(file)?;
            std::fs::rename(&staged, &path).map_err(file)?;
            format!(
                "{summary}the new key is in {}; the old one is in {} (delete it once your backup \
                 holds the new key). Restart deja to use it.\n",
                path.display(),
                old_path.display()
            )
        }
        _ => format!(
            "{summary}{new_key}\nset this as DEJA_SECRET_KEY (or [store] secret_key) on every \
             replica and restart them: until then they cannot open the credentials.\n"
        ),
    })
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `key` owner-only beside `path` as `<path>.new`.
fn stage(path: &Path, key: &str) -> Result<PathBuf, RotateError> {
    use std::io::Write;
    let staged = suffixed(path, ".new");
    let file = |source| RotateError::File {
        path: staged.clone(),
        source,
    };
    // A leftover from an interrupted rotation is replaced, never reused with its permissions.
    match std::fs::remove_file(&staged) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(file(e)),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(&staged).map_err(file)?;
    out.write_all(format!("{key}\n").as_bytes()).map_err(file)?;
    out.sync_all().map_err(file)?;
    Ok(staged)
}
