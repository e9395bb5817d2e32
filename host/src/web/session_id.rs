//! A session id from the path (`/api/sessions/{id}/...`), checked once at
//! the edge: 1 to 128 characters among letters, digits and `-_.:@+`, so it
//! is safe in a forwarded path and in a log line. Ids in bodies and queries
//! are checked with the same rule (`cluster::forward::valid_session_id`).

use super::ApiError;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

/// The message a client gets for an id that does not pass.
pub const INVALID: &str = "session_id must be 1 to 128 characters among letters, digits and -_.:@+";

pub struct SessionId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SessionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        check(&id)?;
        Ok(SessionId(id))
    }
}

/// The same check for an id from a body or a query.
pub fn check(id: &str) -> Result<(), ApiError> {
    if crate::cluster::forward::valid_session_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(INVALID))
    }
}
