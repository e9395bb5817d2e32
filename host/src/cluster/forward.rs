//! A request about a call another live host runs (a chat message, mute,
//! the end of a chat) is handed to that host, which holds the call's
//! pipeline; its answer is returned as it is. The owner is the host the
//! store records for the call, while its lease holds.

use crate::store::Store;
use std::time::Duration;

/// Marks a forwarded request (with the forwarding host's id): it is
/// answered where it lands, never forwarded again.
pub const FORWARDED: &str = "x-callpipe-forwarded-by";

/// How long the owner may take to answer (a chat turn runs the pipeline).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The address of the live host, other than `me`, that runs `session_id`.
pub async fn owner_elsewhere(store: &Store, me: &str, session_id: &str) -> Option<String> {
    let call = match store.call(session_id).await {
        Ok(c) => c?,
        Err(e) => {
            tracing::warn!(session = %session_id, "cannot look up the call's host: {e}");
            return None;
        }
    };
    if call.ended_at.is_some() {
        return None;
    }
    let host = call.host_id.filter(|h| h != me)?;
    let row = store.host_row(&host).await.ok()??;
    let alive = row.lease_until > crate::clock::now_epoch();
    (alive && !row.address.is_empty()).then_some(row.address)
}

/// What the owner answered.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Sends `body` to `path` on the host at `address`, as this host `me`,
/// with the caller's authorization and content type.
pub async fn forward(
    address: &str,
    path: &str,
    me: &str,
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<Answer, String> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default()
    });
    let url = format!("{address}{path}");
    let mut request = client.post(&url).header(FORWARDED, me).body(body);
    if let Some(a) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, a);
    }
    if let Some(c) = content_type {
        request = request.header(reqwest::header::CONTENT_TYPE, c);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("the call's host at {address} did not answer: {e}"))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("the call's host at {address} broke off its answer: {e}"))?
        .to_vec();
    Ok(Answer {
        status,
        content_type,
        body,
    })
}
