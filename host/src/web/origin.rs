//! State-changing requests (POST and the like) from other web sites: a page
//! elsewhere can make a browser post a form or plain text to this server,
//! with the dashboard's cookie if it has one, or with no token at all when
//! the token is off. So such a request must say it is JSON or a form, and a
//! browser's `Origin`, when it sends one, must be this server's.

use super::ApiError;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn same_origin(request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let headers = request.headers();
    if let Err(e) = check(headers) {
        tracing::warn!(path = %request.uri().path(), "refused a request: {}", e.1);
        return ApiError::new(e.0, e.1).into_response();
    }
    next.run(request).await
}

fn check(headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get("x-forwarded-host")
            .or_else(|| headers.get(header::HOST))
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !same_host(origin, host) {
            return Err((
                StatusCode::FORBIDDEN,
                "cross-origin request refused: this server takes state-changing requests \
                 from its own pages and from clients that send no Origin"
                    .into(),
            ));
        }
    }
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|n| n.trim() != "0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match kind.as_deref() {
        // Articles for /api/kb/import: types a page elsewhere cannot send
        // without the browser asking this server first (CORS preflight).
        Some(
            "application/json"
            | "application/x-www-form-urlencoded"
            | "application/x-ndjson"
            | "application/jsonl"
            | "text/markdown",
        ) => Ok(()),
        None if !has_body => Ok(()),
        other => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send JSON (content-type: application/json) or a form, not {}",
                other.unwrap_or("a body without a content type")
            ),
        )),
    }
}

/// Whether `origin` (`scheme://host[:port]`) names `host` (`host[:port]`).
fn same_host(origin: &str, host: &str) -> bool {
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let origin_host = rest.split('/').next().unwrap_or("");
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn other_sites_and_other_bodies_are_refused() {
        let json = [
            ("content-type", "application/json"),
            ("content-length", "2"),
        ];
        assert!(check(&headers(&json)).is_ok(), "curl: no Origin");
        let mut own = json.to_vec();
        own.extend([
            ("origin", "http://127.0.0.1:8000"),
            ("host", "127.0.0.1:8000"),
        ]);
        assert!(check(&headers(&own)).is_ok());
        let mut evil = json.to_vec();
        evil.extend([
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8000"),
        ]);
        assert_eq!(check(&headers(&evil)).unwrap_err().0, StatusCode::FORBIDDEN);
        let text = [("content-type", "text/plain"), ("content-length", "5")];
        assert_eq!(
            check(&headers(&text)).unwrap_err().0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert!(check(&headers(&[])).is_ok(), "no body, no type");
    }
}
