//! The secret key a SQLite store keeps beside its database file when the operator set none:
//! created on first start (32 random bytes as hex, readable by the owner only) so that virtual
//! keys work on the embedded defaults. Postgres stores get no file: replicas must share one key,
//! so it is set (`DEJA_SECRET_KEY`) on each of them.

use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{KeyInit, OsRng};

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or creating the file failed.
    #[error("secret key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file does not hold 64 hex characters.
    #[error("secret key file {0} does not hold 64 hex characters; restore it from a backup")]
    Malformed(PathBuf),
}

/// Where a store at `url` keeps its key: `<database file>.key`. `None` for Postgres and for an
/// in-memory SQLite store.
pub fn path_for(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (file, options) = rest.split_once('?').unwrap_or((rest, ""));
    if file.is_empty() || file.starts_with(":memory:") || options.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(format!("{file}.key")))
}

/// The key in `path`, and whether this call created it. A new file is written owner-only and
/// never over an existing one (two processes starting at once end up with the same key).
pub fn load_or_create(path: &Path) -> Result<(String, bool), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let created = match create(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(io(e)),
    };
    let key = std::fs::read_to_string(path).map_err(io)?;
    let key = key.trim();
    if key.len() != 64 || !key.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(KeyFileError::Malformed(path.to_owned()));
    }
    Ok((key.to_owned(), created))
}

fn create(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(format!("{}\n", fresh_key()).as_bytes())?;
    file.sync_all()
}

/// 32 random bytes from the operating system, as 64 hex characters.
pub fn fresh_key() -> String {
    let key = XChaCha20Poly1305::generate_key(&mut OsRng);
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sqlite_file_store_gets_a_key_file() {
        let cases = [
            ("sqlite://deja.db?mode=rwc", Some("deja.db.key")),
            ("sqlite:/var/lib/deja/d.db", Some("/var/lib/deja/d.db.key")),
            ("sqlite::memory:", None),
            ("sqlite://x.db?mode=memory", None),
            ("postgres://u:p@db/deja", None),
        ];
        for (url, want) in cases {
            assert_eq!(path_for(url), want.map(PathBuf::from), "{url}");
        }
    }

    #[test]
    fn the_key_is_created_once_owner_only_and_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deja.db.key");
        let (first, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(first.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, created) = load_or_create(&path).unwrap();
        assert_eq!((again.as_str(), created), (first.as_str(), false));
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyFileError::Malformed(_))
        ));
    }
}
