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
}
