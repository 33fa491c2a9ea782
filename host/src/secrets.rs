//! Sealing secrets at rest: plugin settings marked `secret` (API keys,
//! passwords) are stored encrypted with ChaCha20-Poly1305 under the
//! platform's secret key, bound to where they belong (tenant, plugin,
//! setting), so a copied value does not open anywhere else.
//!
//! The key is 32 random bytes, hex-encoded in a file (by default
//! `<data_dir>/secret.key`, created on first use, readable by its owner
//! only). Every host sharing one database needs the same file: a host with
//! another key cannot read the secrets, and says so.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

/// Bytes of a link signature: 128 bits, as 32 hex digits.
const SIGNATURE_BYTES: usize = 16;

/// What a sealed value starts with; the version lets the scheme change.
pub(crate) const SEALED_PREFIX: &str = "sealed:v1:";

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("{0} is not a sealed secret")]
    NotSealed(String),
    #[error(
        "{0} cannot be decrypted: it was sealed with another secret key or for another place; restore the key file, or set the secret again"
    )]
    Undecryptable(String),
}

/// The platform's secret key, ready to seal and open.
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
    /// Signs links the host hands out (tracking, unsubscribe, callbacks):
    /// derived from the key, so that no message is ever both sealed and
    /// signed with the same key.
    mac_key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn new(key: [u8; KEY_BYTES]) -> SecretBox {
        let mut derivation = Sha256::new();
        derivation.update(b"tollgate link signing\0");
        derivation.update(key);
        SecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            mac_key: derivation.finalize().into(),
        }
    }

    fn mac(&self, purpose: &str, data: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.mac_key).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data.as_bytes());
        mac
    }

    /// A signature of `data` for `purpose` (`"unsubscribe"`, `"click"`...),
    /// as 32 hex digits, to put in a link the host will verify.
    pub fn sign(&self, purpose: &str, data: &str) -> String {
        let tag = self.mac(purpose, data).finalize().into_bytes();
        tag[..SIGNATURE_BYTES]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Whether `signature` is [`SecretBox::sign`]'s for `data` and
    /// `purpose`; compared in constant time.
    pub fn verify(&self, purpose: &str, data: &str, signature: &str) -> bool {
        if signature.len() != SIGNATURE_BYTES * 2 || !signature.is_ascii() {
            return false;
        }
        let mut bytes = [0_u8; SIGNATURE_BYTES];
        for (index, byte) in bytes.iter_mut().enumerate() {
            match u8::from_str_radix(&signature[index * 2..index * 2 + 2], 16) {
                Ok(value) => *byte = value,
                Err(_) => return false,
            }
        }
        self.mac(purpose, data)
            .verify_truncated_left(&bytes)
            .is_ok()
    }

    /// Reads the key file, creating it with a new random key (mode 0600)
    /// when it does not exist.
    pub fn from_key_file(path: &Path) -> anyhow::Result<SecretBox> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                create_key_file(path)?;
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
            }
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", path.display()));
            }
        };
        let key = decode_hex(text.trim())
            .filter(|bytes| bytes.len() == KEY_BYTES)
            .with_context(|| {
                format!(
                    "{} must hold {KEY_BYTES} bytes as {} hex digits",
                    path.display(),
                    KEY_BYTES * 2
                )
            })?;
        let mut bytes = [0; KEY_BYTES];
        bytes.copy_from_slice(&key);
        Ok(SecretBox::new(bytes))
    }

    /// Encrypts `plaintext` for the place `context` names.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message under 256 GiB");
        let mut sealed = String::from(SEALED_PREFIX);
        sealed.push_str(&encode_hex(&nonce));
        sealed.push_str(&encode_hex(&ciphertext));
        sealed
    }

    /// Decrypts a value sealed for `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SecretError> {
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(decode_hex)
            .filter(|bytes| bytes.len() > NONCE_BYTES)
            .ok_or_else(|| SecretError::NotSealed(context.to_owned()))?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Undecryptable(context.to_owned()))?;
        String::from_utf8(plaintext).map_err(|_| SecretError::Undecryptable(context.to_owned()))
    }
}

fn create_key_file(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key: [u8; KEY_BYTES] = rand::random();
    let mut options = std::fs::OpenOptions::new();
    // create_new: two processes starting at once must not both write a key.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            writeln!(file, "{}", encode_hex(&key))
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "created the secret key for plugin settings; back it up");
            Ok(())
        }
        // Another process created it first: use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error).with_context(|| format!("creating {}", path.display())),
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_in_its_place() {
        let secrets = SecretBox::new([7; KEY_BYTES]);
        let sealed = secrets.seal("sk_live_123", "tenant 1/card/secret_key");
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("sk_live_123"));
        // A fresh nonce each time: the same secret never looks the same.
        assert_ne!(
            sealed,
            secrets.seal("sk_live_123", "tenant 1/card/secret_key")
        );
        assert_eq!(
            secrets.open(&sealed, "tenant 1/card/secret_key").as_deref(),
            Ok("sk_live_123")
        );
        assert_eq!(
            secrets.open(&sealed, "tenant 2/card/secret_key"),
            Err(SecretError::Undecryptable(
                "tenant 2/card/secret_key".into()
            ))
        );
        let other_key = SecretBox::new([8; KEY_BYTES]);
        assert!(matches!(
            other_key.open(&sealed, "tenant 1/card/secret_key"),
            Err(SecretError::Undecryptable(_))
        ));
        // Change the last character for certain: writing a fixed "00" over
        // it left the value as it was whenever it already ended so.
        let mut tampered = sealed.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert!(secrets.open(&tampered, "tenant 1/card/secret_key").is_err());
        assert!(matches!(
            secrets.open("sk_live_123", "tenant 1/card/secret_key"),
            Err(SecretError::NotSealed(_))
        ));
    }

    #[test]
    fn the_key_file_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secret.key");
        let first = SecretBox::from_key_file(&path).unwrap();
        let sealed = first.seal("hunter2", "here");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = SecretBox::from_key_file(&path).unwrap();
        assert_eq!(again.open(&sealed, "here").as_deref(), Ok("hunter2"));

        std::fs::write(&path, "not hex\n").unwrap();
        let refusal = SecretBox::from_key_file(&path).unwrap_err().to_string();
        assert!(
            refusal.ends_with("must hold 32 bytes as 64 hex digits"),
            "{refusal}"
        );
    }
}
