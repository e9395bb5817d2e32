//! The API and dashboard token (`CALLPIPE_API_TOKEN`). A request carries it
//! as `Authorization: Bearer …`, as the `callpipe_token` cookie, or once as
//! `?token=…` (which sets the cookie, so a browser's EventSource and fetches
//! carry it from then on, and sends the browser on to the same address
//! without the token). Twilio's routes are checked by signature instead,
//! and health and readiness are open to load balancers.

use super::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "callpipe_token";

/// Where a request's token was found.
enum Presented<'a> {
    Header(&'a str),
    Cookie(&'a str),
    Query(String),
}

impl Presented<'_> {
    fn value(&self) -> &str {
        match self {
            Presented::Header(t) | Presented::Cookie(t) => t,
            Presented::Query(t) => t,
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE).then_some(v)
        })
}

fn query(request: &Request) -> Option<String> {
    let q = request.uri().query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .ok()?
        .into_iter()
        .find_map(|(k, v)| (k == "token").then_some(v))
}

/// Whether `presented` is `expected`, in time that does not depend on where
/// they differ.
pub fn matches(expected: &str, presented: &str) -> bool {
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // A request another host forwarded carries the cluster's signature,
    // never the user's token; the header alone proves nothing.
    if request
        .headers()
        .contains_key(crate::cluster::forward::FORWARDED)
    {
        return match from_another_host(&state, request).await {
            Ok(request) => next.run(request).await,
            Err(response) => response,
        };
    }
    let Some(expected) = state.api_token.as_deref() else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let presented = bearer(headers)
        .map(Presented::Header)
        .or_else(|| cookie(headers).map(Presented::Cookie))
        .or_else(|| query(&request).map(Presented::Query));
    let Some(presented) = presented else {
        return refuse(
            &request,
            "this server needs its API token (CALLPIPE_API_TOKEN)",
        );
    };
    if !matches(expected, presented.value()) {
        tracing::warn!(path = %request.uri().path(), "refused a request with a wrong API token");
        return refuse(&request, "wrong API token");
    }
    let from_query = matches!(presented, Presented::Query(_));
    let secure = came_over_https(&request);
    // A page opened with ?token=: set the cookie and send the browser to
    // the same address without it, so the token leaves the address bar,
    // the history and any proxy's logs of later requests.
    let redirect = (from_query && request.method() == axum::http::Method::GET)
        .then(|| without_token(request.uri()));
    let mut response = match redirect {
        Some(location) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        None => next.run(request).await,
    };
    if from_query {
        let value = format!(
            "{COOKIE}={expected}; Path=/; HttpOnly; SameSite=Strict{}",
            if secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// The largest forwarded body read to check its signature (a chat message,
/// mute, end, context: small JSON documents).
const MAX_FORWARDED_BODY: usize = 256 << 10;

/// Checks a forwarded request's signature (over its method, path, sending
/// host, time and body) and hands the request on with its body restored.
async fn from_another_host(state: &AppState, request: Request) -> Result<Request, Response> {
    use crate::cluster::forward::{FORWARDED, ForwardRefused, SIGNATURE};
    let refuse = |why: ForwardRefused| {
        tracing::warn!("refused a forwarded request: {why}");
        ApiError::new(StatusCode::UNAUTHORIZED, why.to_string()).into_response()
    };
    let Some(key) = state.cluster_key.as_ref() else {
        return Err(refuse(ForwardRefused::NoKey));
    };
    let (parts, body) = request.into_parts();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let host = header(FORWARDED).unwrap_or_default().to_string();
    let signature = header(SIGNATURE).map(str::to_string);
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let bytes = axum::body::to_bytes(body, MAX_FORWARDED_BODY)
        .await
        .map_err(|e| {
            ApiError::bad_request(format!("cannot read the forwarded body: {e}")).into_response()
        })?;
    let now = crate::clock::now_epoch() as u64;
    key.verify(
        parts.method.as_str(),
        &path,
        &host,
        signature.as_deref(),
        &bytes,
        now,
    )
    .map_err(refuse)?;
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// Over TLS, directly or behind a proxy that says so.
fn came_over_https(request: &Request) -> bool {
    request.uri().scheme_str() == Some("https")
        || request
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .next()
                    .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
            })
}

/// The request's path and query without its `token` parameter.
fn without_token(uri: &axum::http::Uri) -> String {
    let rest: Vec<(String, String)> = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != "token")
        .collect();
    match serde_urlencoded::to_string(&rest) {
        Ok(q) if !q.is_empty() => format!("{}?{q}", uri.path()),
        _ => uri.path().to_string(),
    }
}

/// 401: JSON for API clients; for a browser, a page that asks for the token.
fn refuse(request: &Request, message: &str) -> Response {
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let mut response = if wants_html {
        (StatusCode::UNAUTHORIZED, Html(LOGIN_PAGE)).into_response()
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, message).into_response()
    };
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

const LOGIN_PAGE: &str = r#"<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>callpipe</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;display:grid;place-items:center;height:100vh;margin:0;background:#f4f6f8}
form{background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px #0002;display:grid;gap:.75rem;min-width:18rem}
input,button{font:inherit;padding:.5rem}</style></head>
<body><form method="get">
<strong>callpipe</strong>
<label for="token">Jeton d'accès / Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<small>CALLPIPE_API_TOKEN, ou le fichier <code>api-token</code> du répertoire de données.</small>
<button type="submit">Entrer / Enter</button>
</form></body></html>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_token_in_header_and_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; callpipe_token=xyz; b=2"),
        );
        assert_eq!(cookie(&h), Some("xyz"));
    }

    #[test]
    fn the_token_leaves_the_address() {
        let uri: axum::http::Uri = "/demo/technician?token=abc&lang=en".parse().unwrap();
        assert_eq!(without_token(&uri), "/demo/technician?lang=en");
        let uri: axum::http::Uri = "/?token=abc".parse().unwrap();
        assert_eq!(without_token(&uri), "/");
    }

    #[test]
    fn compares_whole_tokens() {
        assert!(matches("secret", "secret"));
        assert!(!matches("secret", "secre"));
        assert!(!matches("secret", "secret2"));
        assert!(!matches("secret", ""));
    }
}
