//! A request about a call another live host runs (a chat message, mute,
//! the end of a chat) is handed to that host, which holds the call's
//! pipeline; its answer is returned as it is. The owner is the host the
//! store records for the call, while its lease holds (on the database's
//! clock).
//!
//! Hosts authenticate each other with a credential of their own, never the
//! user's API token: each forwarded request carries an HMAC-SHA256, keyed
//! by the cluster secret (`CALLPIPE_CLUSTER_SECRET`, shared by the hosts),
//! over its method, path, sending host, time and body. A host address read
//! from the database therefore learns nothing it could reuse elsewhere; a
//! client that sends the forwarding header without a valid signature is
//! refused. Redirects are not followed.

use crate::store::Store;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

/// Marks a forwarded request (with the forwarding host's id): it is
/// answered where it lands, never forwarded again.
pub const FORWARDED: &str = "x-callpipe-forwarded-by";
/// The forwarded request's signature: `t=<unix seconds>,v1=<hex hmac>`.
pub const SIGNATURE: &str = "x-callpipe-cluster-signature";

/// How long the owner may take to answer (a chat turn runs the pipeline).
const TIMEOUT: Duration = Duration::from_secs(30);
/// How far a signature's time may be from the receiver's clock.
const WINDOW_S: u64 = 60;
/// The most of an owner's answer that is read.
const MAX_ANSWER: usize = 4 << 20;
/// The shortest cluster secret accepted.
pub const MIN_SECRET: usize = 16;

/// The hosts' shared secret.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(***)")
    }
}

impl ClusterKey {
    /// From `CALLPIPE_CLUSTER_SECRET`'s value: `None` when empty, an error
    /// when shorter than `MIN_SECRET` bytes.
    pub fn new(secret: &str) -> Result<Option<ClusterKey>, String> {
        let secret = secret.trim();
        if secret.is_empty() {
            return Ok(None);
        }
        if secret.len() < MIN_SECRET {
            return Err(format!(
                "CALLPIPE_CLUSTER_SECRET is {} bytes; use at least {MIN_SECRET} random bytes \
                 (for example `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        Ok(Some(ClusterKey(secret.as_bytes().to_vec())))
    }

    fn mac(&self, method: &str, path: &str, host: &str, t: u64, body: &[u8]) -> Vec<u8> {
        // Keyed HMAC accepts any key length.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => return Vec::new(),
        };
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(host.as_bytes());
        mac.update(b"\n");
        mac.update(t.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    /// The signature header's value for a request sent at `t`.
    pub fn sign(&self, method: &str, path: &str, host: &str, t: u64, body: &[u8]) -> String {
        format!(
            "t={t},v1={}",
            hex::encode(self.mac(method, path, host, t, body))
        )
    }

    /// Checks a forwarded request's signature at time `now`.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        host: &str,
        signature: Option<&str>,
        body: &[u8],
        now: u64,
    ) -> Result<(), ForwardRefused> {
        let signature = signature.ok_or(ForwardRefused::Unsigned)?;
        let mut t = None;
        let mut v1 = None;
        for part in signature.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = v.parse::<u64>().ok(),
                Some(("v1", v)) => v1 = hex::decode(v).ok(),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else {
            return Err(ForwardRefused::Malformed);
        };
        if t.abs_diff(now) > WINDOW_S {
            return Err(ForwardRefused::Stale);
        }
        let expected = self.mac(method, path, host, t, body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_slice(),
            v1.as_slice(),
        )) {
            return Err(ForwardRefused::BadSignature);
        }
        Ok(())
    }
}

/// Why a request that says it was forwarded is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardRefused {
    #[error("this host has no cluster secret (CALLPIPE_CLUSTER_SECRET)")]
    NoKey,
    #[error("the forwarded request is not signed")]
    Unsigned,
    #[error("the forwarded request's signature is malformed")]
    Malformed,
    #[error("the forwarded request's signature is too old or from a skewed clock")]
    Stale,
    #[error("the forwarded request's signature does not match")]
    BadSignature,
}

/// The address of the live host, other than `me`, that runs `session_id`.
pub async fn owner_elsewhere(store: &Store, me: &str, session_id: &str) -> Option<String> {
    match store.live_owner(session_id, me).await {
        Ok(row) => row
            .map(|r| r.address)
            .filter(|a| a.starts_with("http://") || a.starts_with("https://")),
        Err(e) => {
            tracing::warn!(session = %session_id, "cannot look up the call's host: {e}");
            None
        }
    }
}

/// What the owner answered.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Sends `body` to `path` on the host at `address`, as this host `me`,
/// signed with `key`, with the caller's content type (and nothing else of
/// the caller's request: no token, no cookie).
pub async fn forward(
    key: &ClusterKey,
    address: &str,
    path: &str,
    me: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<Answer, String> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let policy = callpipe_remote::Policy {
        timeout: TIMEOUT,
        retries: 0,
        backoff: Duration::ZERO,
    };
    let client = CLIENT.get_or_init(|| callpipe_remote::client(&policy).unwrap_or_default());
    let url = format!("{address}{path}");
    let t = crate::clock::now_epoch() as u64;
    let signature = key.sign("POST", path, me, t, &body);
    let mut request = client
        .post(&url)
        .header(FORWARDED, me)
        .header(SIGNATURE, signature)
        .timeout(TIMEOUT)
        .body(body);
    if let Some(c) = content_type {
        request = request.header(reqwest::header::CONTENT_TYPE, c);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("the call's host at {address} did not answer: {e}"))?;
    let status = response.status().as_u16();
    if response.status().is_redirection() {
        return Err(format!(
            "the call's host at {address} answered with a redirect ({status}); not followed"
        ));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = callpipe_remote::read_limited(response, MAX_ANSWER)
        .await
        .map_err(|e| format!("the call's host at {address}: {e}"))?;
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

/// A session id a client chose is safe to put in a path and a log: 1 to
/// 128 characters among letters, digits and `-_.:@+`, and not only dots.
pub fn valid_session_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@+".contains(&b))
        && !id.bytes().all(|b| b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClusterKey {
        ClusterKey::new("0123456789abcdef-cluster")
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_signature_holds_for_its_request_only() {
        let k = key();
        let body = br#"{"session_id":"s1"}"#;
        let sig = k.sign("POST", "/demo/end-demo-call", "a", 1_000, body);
        let check =
            |m: &str, p: &str, h: &str, b: &[u8], now| k.verify(m, p, h, Some(&sig), b, now);
        assert_eq!(
            check("POST", "/demo/end-demo-call", "a", body, 1_010),
            Ok(())
        );
        for (m, p, h, b) in [
            ("GET", "/demo/end-demo-call", "a", &body[..]),
            ("POST", "/api/sessions/s1/mute", "a", &body[..]),
            ("POST", "/demo/end-demo-call", "b", &body[..]),
            ("POST", "/demo/end-demo-call", "a", &b"{}"[..]),
        ] {
            assert_eq!(check(m, p, h, b, 1_010), Err(ForwardRefused::BadSignature));
        }
        assert_eq!(
            check(
                "POST",
                "/demo/end-demo-call",
                "a",
                body,
                1_000 + WINDOW_S + 1
            ),
            Err(ForwardRefused::Stale)
        );
        let other = ClusterKey::new("another-secret-of-16+").unwrap().unwrap();
        assert_eq!(
            other.verify("POST", "/demo/end-demo-call", "a", Some(&sig), body, 1_010),
            Err(ForwardRefused::BadSignature)
        );
        assert_eq!(
            k.verify("POST", "/x", "a", None, body, 1_010),
            Err(ForwardRefused::Unsigned)
        );
        assert_eq!(
            k.verify("POST", "/x", "a", Some("t=1"), body, 1_010),
            Err(ForwardRefused::Malformed)
        );
    }

    #[test]
    fn secrets_are_long_enough_and_never_printed() {
        assert!(ClusterKey::new("").unwrap().is_none());
        assert!(ClusterKey::new("short").is_err());
        assert_eq!(format!("{:?}", key()), "ClusterKey(***)");
    }

    #[test]
    fn session_ids_fit_a_path_and_a_log() {
        for ok in ["s1", "CA0123abc", "chat-x", "demo_1.2", "a:b@c+d"] {
            assert!(valid_session_id(ok), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in [
            "",
            "..",
            ".",
            "../ops",
            "a/b",
            "a b",
            "é",
            "a\nb",
            "a%2e",
            long.as_str(),
        ] {
            assert!(!valid_session_id(bad), "{bad:?}");
        }
    }
}
