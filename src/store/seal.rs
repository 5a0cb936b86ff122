//! Sealing provider credentials at rest with XChaCha20-Poly1305 (a random 24-byte nonce per
//! value), under the 32-byte key from `[store] secret_key` / `DEJA_SECRET_KEY`.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Seals and opens values; built from a validated key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// A sealer from 64 hex characters (validated with the config).
    pub fn from_hex(key: &str) -> Option<Self> {
        let bytes: Vec<u8> = (0..key.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(key.get(i..i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).ok()?;
        Some(Self { cipher })
    }

    /// `nonce || ciphertext`, hex.
    pub fn seal(&self, plain: &str) -> Option<String> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self.cipher.encrypt(&nonce, plain.as_bytes()).ok()?;
        Some(hex(nonce.iter().chain(&sealed)))
    }

    /// The plain value, if `sealed` was sealed under this key and not altered.
    pub fn open(&self, sealed: &str) -> Option<String> {
        let bytes: Vec<u8> = (0..sealed.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(sealed.get(i..i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        if bytes.len() < 24 {
            return None;
        }
        let (nonce, body) = bytes.split_at(24);
        let plain = self.cipher.decrypt(XNonce::from_slice(nonce), body).ok()?;
        String::from_utf8(plain).ok()
    }
}

fn hex<'a>(bytes: impl Iterator<Item = &'a u8>) -> String {
    bytes.map(|b| format!("{b:02x}")).collect()
}

/// Marks a config's `api_key` value as sealed, so a sealed value is never taken for a key.
pub const SEALED_PREFIX: &str = "deja-sealed:";

/// Calls `each` on every `api_key` string in a config tree.
pub(super) fn each_inline_key(
    config: &mut serde_json::Value,
    each: &mut impl FnMut(&mut String) -> bool,
) -> bool {
    use serde_json::Value;
    match config {
        Value::Object(map) => {
            let mut ok = true;
            for (name, value) in map.iter_mut() {
                ok &= match value {
                    Value::String(s) if name == "api_key" => each(s),
                    other => each_inline_key(other, each),
                };
            }
            ok
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(true, |ok, v| each_inline_key(v, each) & ok),
        _ => true,
    }
}

/// Seals every inline `api_key` of a config before it is stored. `false` when the config holds
/// one and there is no sealer (it is not stored in plaintext).
pub fn seal_inline_keys(sealer: Option<&Sealer>, config: &mut serde_json::Value) -> bool {
    each_inline_key(config, &mut |key| {
        if key.starts_with(SEALED_PREFIX) {
            return true;
        }
        match sealer.and_then(|s| s.seal(key)) {
            Some(sealed) => {
                *key = format!("{SEALED_PREFIX}{sealed}");
                true
            }
            None => false,
        }
    })
}

/// Whether a config holds an inline `api_key` that is a mask as shown (`sk-1****cdef`): a
/// config read back and saved again must not replace the key with its mask.
pub fn has_masked_inline_key(config: &serde_json::Value) -> bool {
    let mut found = false;
    each_inline_key(&mut config.clone(), &mut |key| {
        found |= key.contains("****");
        true
    });
    found
}

/// Opens every sealed inline `api_key` of a stored config for use; `false` when one cannot be
/// opened.
pub fn open_inline_keys(sealer: Option<&Sealer>, config: &mut serde_json::Value) -> bool {
    each_inline_key(config, &mut |key| match key.strip_prefix(SEALED_PREFIX) {
        None => true,
        Some(sealed) => match sealer.and_then(|s| s.open(sealed)) {
            Some(plain) => {
                *key = plain;
                true
            }
            None => false,
        },
    })
}

/// Masks every inline `api_key` of a stored config for showing.
pub fn mask_inline_keys(sealer: Option<&Sealer>, config: &mut serde_json::Value) {
    each_inline_key(config, &mut |key| {
        let plain = match key.strip_prefix(SEALED_PREFIX) {
            Some(sealed) => sealer.and_then(|s| s.open(sealed)).unwrap_or_default(),
            None => key.clone(),
        };
        *key = if plain.is_empty() {
            "****".to_owned()
        } else {
            mask(&plain)
        };
        true
    });
}

/// What a credential looks like when shown: its first 4 and last 4 characters.
pub fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 10 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_unaltered_and_under_their_key() {
        let key = "11".repeat(32);
        let sealer = Sealer::from_hex(&key).unwrap();
        let sealed = sealer.seal("sk-provider-secret").unwrap();
        assert!(!sealed.contains("sk-provider"));
        assert_ne!(
            sealed,
            sealer.seal("sk-provider-secret").unwrap(),
            "a fresh nonce each time"
        );
        assert_eq!(sealer.open(&sealed).as_deref(), Some("sk-provider-secret"));
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(sealer.open(&String::from_utf8(altered).unwrap()), None);
        let other = Sealer::from_hex(&"22".repeat(32)).unwrap();
        assert_eq!(other.open(&sealed), None);
        assert_eq!(mask("sk-1234567890abcdef"), "sk-1****cdef");
    }

    #[test]
    fn inline_keys_are_sealed_opened_and_masked_at_any_depth() {
        let sealer = Sealer::from_hex(&"11".repeat(32)).unwrap();
        let plain = serde_json::json!({"api_key": "sk-top-secret-1234",
            "targets": [{"targets": [{"api_key": "sk-deep-secret-5678"}]}]});
        let mut stored = plain.clone();
        assert!(seal_inline_keys(Some(&sealer), &mut stored));
        let text = stored.to_string();
        assert!(!text.contains("secret"), "{text}");
        let mut shown = stored.clone();
        mask_inline_keys(Some(&sealer), &mut shown);
        assert_eq!(shown["targets"][0]["targets"][0]["api_key"], "sk-d****5678");
        assert!(open_inline_keys(Some(&sealer), &mut stored));
        assert_eq!(stored, plain);
        let mut unsealable = plain.clone();
        assert!(!seal_inline_keys(None, &mut unsealable));
        let mut no_keys = serde_json::json!({"retry": {"attempts": 1}});
        assert!(seal_inline_keys(None, &mut no_keys));
    }
}
