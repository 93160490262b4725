//! Secrets at rest: values marked secret (registry passwords) are sealed
//! with AES-256-GCM before they are proposed, so the raft log, the state
//! and its snapshots hold only ciphertext. The key lives outside the
//! replicated state, in a file every server is started with
//! (`--secret-key`; `berth dev` makes its own).

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The prefix of a sealed value (the scheme's version).
const PREFIX: &str = "sealed:v1:";

/// Seals and opens secrets with one key.
pub struct SecretBox {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox")
    }
}

impl SecretBox {
    /// A box over a 32-byte key, given as 64 hex digits (a key file's text).
    pub fn from_hex(text: &str) -> Result<SecretBox, String> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| "the secret key is not hex (expected 64 hex digits)".to_string())?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| format!("the secret key is {} bytes, not 32", bytes.len()))?;
        Ok(SecretBox {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// A fresh key as 64 hex digits.
    pub fn new_key() -> Result<String, String> {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| "no randomness for a key".to_string())?;
        Ok(hex::encode(k))
    }

    /// Seals `plain`: `sealed:v1:<hex of nonce, ciphertext and tag>`.
    pub fn seal(&self, plain: &str) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| "no randomness for a nonce".to_string())?;
        let mut buf = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", hex::encode(out)))
    }

    /// Opens a sealed value; a value that is not sealed (stored before
    /// sealing existed) is returned as it is.
    pub fn open(&self, value: &str) -> Result<String, String> {
        let Some(h) = value.strip_prefix(PREFIX) else {
            return Ok(value.to_string());
        };
        let bytes = hex::decode(h).map_err(|_| "a sealed value is not hex".to_string())?;
        if bytes.len() < NONCE_LEN {
            return Err("a sealed value is too short".into());
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| {
                "a secret does not open with this server's key (are all servers started with the \
                 same --secret-key?)"
                    .to_string()
            })?;
        String::from_utf8(plain.to_vec()).map_err(|_| "a secret is not UTF-8".to_string())
    }
}

/// Whether `value` is sealed.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_the_wrong_key() {
        let b = SecretBox::from_hex(&SecretBox::new_key().unwrap()).unwrap();
        let s = b.seal("hunter2").unwrap();
        assert!(is_sealed(&s) && !s.contains("hunter2"));
        assert_ne!(s, b.seal("hunter2").unwrap(), "a fresh nonce each time");
        assert_eq!(b.open(&s).unwrap(), "hunter2");
        assert_eq!(b.open("plain").unwrap(), "plain");
        let other = SecretBox::from_hex(&SecretBox::new_key().unwrap()).unwrap();
        assert!(other.open(&s).unwrap_err().contains("--secret-key"));
        assert!(SecretBox::from_hex("abcd").unwrap_err().contains("32"));
        assert!(SecretBox::from_hex("zz").unwrap_err().contains("hex"));
    }
}
