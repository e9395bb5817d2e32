//! Per-call media-stream tokens. The TwiML that sends a call to
//! `/twilio/media-stream` carries, as a `<Parameter>`, a token the server
//! signed for that call's SID and session, valid for a few minutes; the
//! stream's `start` message must bring it back. A captured signature or
//! stream URL then opens nothing: the token names one call, expires, and is
//! accepted once: by this process (`verify`), and by every host sharing the
//! database (the stream spends its nonce in the store).
//!
//! Format: `v1.<expires>.<nonce>.<mac>`, the MAC being HMAC-SHA256 over the
//! version, expiry, nonce, call SID and session id.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;

/// The `<Parameter>` (and `customParameters` key) that carries the token.
pub const PARAMETER: &str = "stream_token";

/// Long enough for a greeting and Twilio's connect; short enough that a
/// leaked TwiML is useless soon after.
pub const DEFAULT_TTL_SECS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the stream's start has no {PARAMETER}")]
    Missing,
    #[error("the stream token is malformed")]
    Malformed,
    #[error("the stream token was not signed by this server for this call")]
    BadSignature,
    #[error("the stream token expired")]
    Expired,
    #[error("the stream token was already used")]
    Replayed,
}

/// Signs and checks stream tokens with one server secret.
pub struct StreamTokens {
    key: Vec<u8>,
    ttl_secs: u64,
    /// Nonces accepted and not yet expired: a token starts one stream.
    used: Mutex<HashMap<String, u64>>,
}

impl StreamTokens {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        Self {
            key: secret.to_vec(),
            ttl_secs,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// A token for the call `call_sid` streaming into `session_id`, issued
    /// at `now` (Unix seconds).
    pub fn issue(&self, call_sid: &str, session_id: &str, now: u64) -> String {
        let expires = now + self.ttl_secs;
        let mut nonce = [0u8; 12];
        if getrandom::fill(&mut nonce).is_err() {
            // Without the OS's generator, still a nonce no other token has
            // (a shared zero one would spend every call's token at once):
            // this call, this moment, this process's count.
            static ISSUED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = ISSUED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut m = self.hmac();
            m.update(
                format!("nonce\u{1f}{call_sid}\u{1f}{session_id}\u{1f}{now}\u{1f}{n}").as_bytes(),
            );
            nonce.copy_from_slice(&m.finalize().into_bytes()[..12]);
        }
        let nonce = hex::encode(nonce);
        let mac = self.mac(expires, &nonce, call_sid, session_id);
        format!("v1.{expires}.{nonce}.{mac}")
    }

    /// Checks a token against the `start` message's call SID and session,
    /// and spends it.
    pub fn verify(
        &self,
        token: Option<&str>,
        call_sid: &str,
        session_id: &str,
        now: u64,
    ) -> Result<(), TokenError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(TokenError::Missing)?;
        let mut parts = token.split('.');
        let (Some("v1"), Some(expires), Some(nonce), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        let given = hex::decode(mac).map_err(|_| TokenError::Malformed)?;
        let mut m = self.hmac();
        feed(&mut m, expires, nonce, call_sid, session_id);
        // Constant-time comparison.
        m.verify_slice(&given)
            .map_err(|_| TokenError::BadSignature)?;
        if now > expires {
            return Err(TokenError::Expired);
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, until| *until >= now);
        if used.insert(nonce.to_string(), expires).is_some() {
            return Err(TokenError::Replayed);
        }
        Ok(())
    }

    /// The nonce and expiry of a token `verify` accepted, to spend it where
    /// every host sees (the store).
    pub fn nonce(token: &str) -> Option<(&str, u64)> {
        let mut parts = token.split('.');
        let (Some("v1"), Some(expires), Some(nonce)) = (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some((nonce, expires.parse().ok()?))
    }

    fn hmac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }

    fn mac(&self, expires: u64, nonce: &str, call_sid: &str, session_id: &str) -> String {
        let mut m = self.hmac();
        feed(&mut m, expires, nonce, call_sid, session_id);
        hex::encode(m.finalize().into_bytes())
    }
}

/// Length-prefixed fields, so no two different inputs sign the same bytes.
fn feed(m: &mut Hmac<Sha256>, expires: u64, nonce: &str, call_sid: &str, session_id: &str) {
    for field in ["v1", &expires.to_string(), nonce, call_sid, session_id] {
        m.update(&(field.len() as u32).to_be_bytes());
        m.update(field.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_opens_its_own_call_once() {
        let tokens = StreamTokens::new(b"secret", 300);
        let t = tokens.issue(SID, "s1", 1_000);
        assert_eq!(tokens.verify(Some(&t), SID, "s1", 1_010), Ok(()));
        assert_eq!(
            tokens.verify(Some(&t), SID, "s1", 1_020),
            Err(TokenError::Replayed)
        );
    }

    #[test]
    fn another_call_session_server_or_time_is_refused() {
        let tokens = StreamTokens::new(b"secret", 300);
        let t = tokens.issue(SID, "s1", 1_000);
        let other_sid = "CAffffffffffffffffffffffffffffffff";
        assert_eq!(
            tokens.verify(Some(&t), other_sid, "s1", 1_010),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            tokens.verify(Some(&t), SID, "s2", 1_010),
            Err(TokenError::BadSignature)
        );
        let elsewhere = StreamTokens::new(b"another secret", 300);
        assert_eq!(
            elsewhere.verify(Some(&t), SID, "s1", 1_010),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            tokens.verify(Some(&t), SID, "s1", 1_301),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn garbage_is_malformed_or_missing() {
        let tokens = StreamTokens::new(b"secret", 300);
        assert_eq!(tokens.verify(None, SID, "s1", 0), Err(TokenError::Missing));
        assert_eq!(
            tokens.verify(Some(""), SID, "s1", 0),
            Err(TokenError::Missing)
        );
        for bad in [
            "v1",
            "v2.1.2.3",
            "v1.x.n.00",
            "v1.1.n.zz",
            "v1.1.n.00.extra",
        ] {
            assert_eq!(
                tokens.verify(Some(bad), SID, "s1", 0),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        // Tampering with the expiry breaks the MAC.
        let t = tokens.issue(SID, "s1", 1_000);
        let forged = t.replacen("v1.1300.", "v1.9999.", 1);
        assert_eq!(
            tokens.verify(Some(&forged), SID, "s1", 1_001),
            Err(TokenError::BadSignature)
        );
    }
}
