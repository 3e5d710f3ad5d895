//! The secrets of authentication and their stored forms.
//!
//! - Passwords are stored as argon2id PHC strings (salted, slow by design).
//! - API tokens (`lft_…`) and agent credentials (`lfa_…`) are 32 random
//!   bytes; only their SHA-256 is stored. A slow hash adds nothing to a
//!   secret with 256 bits of entropy, and the fast one keeps ingest cheap.
//! - Session tokens (`lfs.<claims>.<mac>`) are signed with HMAC-SHA256 by a
//!   key every collector shares (stored in ClickHouse), so any collector
//!   verifies what another issued, and expire.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A password or token in transit: serialized as itself, but never shown
/// by `Debug`, so it cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

pub const API_TOKEN_PREFIX: &str = "lft_";
pub const AGENT_TOKEN_PREFIX: &str = "lfa_";
const SESSION_PREFIX: &str = "lfs.";

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail on a valid salt")
        .to_string()
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A new random secret with the given prefix, and the hash to store.
pub fn new_secret(prefix: &str) -> (String, String) {
    let secret = format!("{prefix}{}", B64.encode(random_bytes::<32>()));
    let hash = secret_hash(&secret);
    (secret, hash)
}

pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// What a session token asserts. Role and tenants are not in it: they are
/// read from the user's current record, so a change applies at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The username.
    pub sub: String,
    /// Issued and expiry times, seconds since the epoch.
    pub iat: u64,
    pub exp: u64,
    /// `password_tag` of the password the session was opened with: a new
    /// password ends every session opened with the old one.
    #[serde(default)]
    pub pwd: String,
}

/// A short tag of a stored password hash (not of the password).
pub fn password_tag(password_hash: &str) -> String {
    hex::encode(&Sha256::digest(password_hash.as_bytes())[..8])
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("malformed token")]
    Malformed,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token expired; log in again")]
    Expired,
}

pub fn sign_session(claims: &Claims, key: &[u8]) -> String {
    let body = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let mac = B64.encode(mac(key, body.as_bytes()).finalize().into_bytes());
    format!("{SESSION_PREFIX}{body}.{mac}")
}

pub fn is_session_token(token: &str) -> bool {
    token.starts_with(SESSION_PREFIX)
}

pub fn verify_session(token: &str, key: &[u8], now_s: u64) -> Result<Claims, SessionError> {
    let rest = token
        .strip_prefix(SESSION_PREFIX)
        .ok_or(SessionError::Malformed)?;
    let (body, sig_text) = rest.split_once('.').ok_or(SessionError::Malformed)?;
    let sig = B64.decode(sig_text).map_err(|_| SessionError::Malformed)?;
    // One encoding only: a MAC spelled another way (another alphabet,
    // padding, stray bits) is not this token.
    if B64.encode(&sig) != sig_text {
        return Err(SessionError::Malformed);
    }
    mac(key, body.as_bytes())
        .verify_slice(&sig)
        .map_err(|_| SessionError::BadSignature)?;
    let claims: Claims = B64
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(SessionError::Malformed)?;
    if claims.exp <= now_s {
        return Err(SessionError::Expired);
    }
    Ok(claims)
}

/// Whether `a` and `b` are equal, in time that depends on their lengths
/// only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn mac(key: &[u8], data: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes keys of any length");
    m.update(data);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let stored = hash_password("correct horse");
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &stored));
        assert!(!verify_password("correct hors", &stored));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(
            stored,
            hash_password("correct horse"),
            "salted: same password, different hash"
        );
    }

    fn alice() -> Claims {
        Claims {
            sub: "alice".into(),
            iat: 100,
            exp: 200,
            pwd: password_tag("$argon2id$..."),
        }
    }

    #[test]
    fn session_tokens_are_signed_and_expire() {
        let key = b"k1";
        let claims = alice();
        let token = sign_session(&claims, key);
        assert!(is_session_token(&token));
        assert_eq!(verify_session(&token, key, 150), Ok(claims.clone()));
        assert_eq!(verify_session(&token, key, 200), Err(SessionError::Expired));
        assert_eq!(
            verify_session(&token, b"k2", 150),
            Err(SessionError::BadSignature)
        );
        // A claim edited without the key fails the signature.
        let forged = sign_session(
            &Claims {
                sub: "root".into(),
                ..claims
            },
            b"k2",
        );
        let (body, _) = forged.rsplit_once('.').expect("has a mac");
        let (_, mac) = token.rsplit_once('.').expect("has a mac");
        assert_eq!(
            verify_session(&format!("{body}.{mac}"), key, 150),
            Err(SessionError::BadSignature)
        );
        assert_eq!(
            verify_session("lfs.garbage", key, 150),
            Err(SessionError::Malformed)
        );
    }

    #[test]
    fn a_session_token_has_one_spelling() {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
        let key = b"k1";
        let claims = alice();
        // Try until a MAC holds a byte that the alphabets spell apart.
        for n in 0..64 {
            let token = sign_session(
                &Claims {
                    iat: n,
                    ..claims.clone()
                },
                key,
            );
            let (body, mac_text) = token.rsplit_once('.').expect("has a mac");
            let mac = B64.decode(mac_text).expect("decodes");
            for respelled in [
                STANDARD.encode(&mac),
                STANDARD_NO_PAD.encode(&mac),
                URL_SAFE.encode(&mac),
            ] {
                if respelled != mac_text {
                    assert_eq!(
                        verify_session(&format!("{body}.{respelled}"), key, 150),
                        Err(SessionError::Malformed),
                        "{respelled}"
                    );
                }
            }
        }
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"sane"));
        assert!(!constant_time_eq(b"same", b"same!"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(
            serde_json::to_string(&s).expect("serializes"),
            "\"hunter2\""
        );
    }

    #[test]
    fn secrets_are_random_and_stored_hashed() {
        let (a, ha) = new_secret(API_TOKEN_PREFIX);
        let (b, _) = new_secret(API_TOKEN_PREFIX);
        assert!(a.starts_with("lft_") && a.len() > 40);
        assert_ne!(a, b);
        assert_eq!(ha, secret_hash(&a));
        assert!(!ha.contains(&a[4..]));
    }
}
