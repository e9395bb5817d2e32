//! The one way callpipe calls a remote HTTP backend: the language model,
//! a speech-recognition or speech-synthesis endpoint, an embeddings
//! endpoint, Twilio's REST API, another host of the cluster.
//!
//! Every backend gets the same behaviour from here, so a fix lands once:
//! a client that never follows redirects (a redirect could carry a bearer
//! elsewhere), a per-try timeout, answers read up to a size cap, one rule
//! for what is retried (timeouts, unreachable, 429, 5xx) and what counts
//! against the endpoint (everything but a request's own fault: 400, 413,
//! 422), exponential backoff, and a circuit breaker per endpoint.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How one remote call is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Per try, connecting and reading the answer included.
    pub timeout: Duration,
    /// Tries after the first (only for retryable failures).
    pub retries: u32,
    /// Wait before the second try; doubled for each one after.
    pub backoff: Duration,
}

impl Policy {
    /// The wait before try `attempt` (0 is the first: no wait).
    pub fn delay(&self, attempt: u32) -> Duration {
        match attempt {
            0 => Duration::ZERO,
            n => self.backoff.saturating_mul(2u32.saturating_pow(n - 1)),
        }
    }

    /// Sleeps before try `attempt`.
    pub async fn wait(&self, attempt: u32) {
        let d = self.delay(attempt);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    pub fn tries(&self) -> u32 {
        self.retries.saturating_add(1)
    }
}

/// An HTTP client for remote backends: no redirects, a connect timeout of
/// at most 5 s (or the per-try timeout when shorter). The per-try timeout
/// is set on each request (`exchange`), so one client serves policies of
/// any length.
pub fn client(policy: &Policy) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(policy.timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// The API key in the environment variable `var`, if it is set and not
/// empty (none for a local server that needs none).
pub fn api_key(var: Option<&str>) -> Option<String> {
    var.and_then(|v| std::env::var(v).ok())
        .filter(|k| !k.trim().is_empty())
}

/// How one try ended.
#[derive(Debug)]
pub enum Outcome {
    /// A 2xx answer, its body read whole (within the cap).
    Answered {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    },
    /// A failure worth another try: no answer in time, unreachable, 429,
    /// 5xx, an answer cut off or over the cap. It counts against the
    /// endpoint.
    Retry(String),
    /// A refusal that another try would not change (a 4xx, a redirect).
    /// `endpoint_fault` says whether it counts against the endpoint: a key
    /// refused or a wrong address keeps failing for every request; a
    /// request too large or malformed (400, 413, 422) is that request's.
    Refused {
        status: u16,
        body: String,
        endpoint_fault: bool,
    },
}

/// Whether a refusal is the endpoint's (or its configuration's) fault
/// rather than the request's.
pub fn endpoint_fault(status: u16) -> bool {
    !matches!(status, 400 | 413 | 422)
}

/// Sends one try with the policy's timeout and reads its answer up to
/// `limit` bytes.
pub async fn exchange(request: reqwest::RequestBuilder, policy: &Policy, limit: usize) -> Outcome {
    let response = match request.timeout(policy.timeout).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Outcome::Retry(format!("no answer within {:?}", policy.timeout));
        }
        Err(e) => return Outcome::Retry(format!("cannot reach the endpoint: {e}")),
    };
    let status = response.status();
    if status.as_u16() == 429 || status.is_server_error() {
        let body = read_prefix(response, ERROR_TEXT).await;
        return Outcome::Retry(format!("the endpoint answered {status}: {body}"));
    }
    if status.is_redirection() {
        let to = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .chars()
            .take(200)
            .collect::<String>();
        return Outcome::Refused {
            status: status.as_u16(),
            body: format!("a redirect to {to}, not followed"),
            endpoint_fault: true,
        };
    }
    if !status.is_success() {
        return Outcome::Refused {
            status: status.as_u16(),
            body: read_prefix(response, ERROR_TEXT).await,
            endpoint_fault: endpoint_fault(status.as_u16()),
        };
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match read_limited(response, limit).await {
        Ok(body) => Outcome::Answered {
            status: status.as_u16(),
            content_type,
            body,
        },
        // Another try would be as large: refused, not retried.
        Err(ReadError::TooLarge(why)) => Outcome::Refused {
            status: status.as_u16(),
            body: why,
            endpoint_fault: true,
        },
        Err(ReadError::Broken(why)) => Outcome::Retry(why),
    }
}

/// Characters of an error answer kept for the message.
const ERROR_TEXT: usize = 300;

/// The start of an error answer as text (at most `chars` characters, read
/// up to 4 KiB and no further: a long error page still names its cause).
async fn read_prefix(mut response: reqwest::Response, chars: usize) -> String {
    let mut body = Vec::new();
    while body.len() < 4096 {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(4096);
    String::from_utf8_lossy(&body).chars().take(chars).collect()
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Over the limit: it would be every time.
    TooLarge(String),
    /// The connection broke off.
    Broken(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge(m) | ReadError::Broken(m) => f.write_str(m),
        }
    }
}

/// A response's body, up to `limit` bytes: an endpoint that sends more is
/// not the one configured (or is broken), and must not fill memory.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let too_large = || ReadError::TooLarge(format!("an answer over {limit} bytes"));
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ReadError::Broken(format!("the answer broke off: {e}")))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Stops calling an endpoint that keeps failing: `threshold` failed
/// requests in a row open it for `cooldown`. Then it is half-open: one
/// request (the probe, taken with [`Breaker::admit`]) goes through while the
/// others are still refused; its success closes the circuit, its failure
/// opens it for another cooldown. A probe that never reports (cancelled by
/// its caller's deadline) gives way to another after one cooldown.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    /// When the half-open circuit let its probe through.
    probe_since: Option<Instant>,
}

impl State {
    fn allows(&self, now: Instant, cooldown: Duration) -> bool {
        match self.open_until {
            None => true,
            Some(until) => now >= until && self.probe_since.is_none_or(|p| now >= p + cooldown),
        }
    }
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// Whether a request could go now (closed, or half-open with no probe
    /// out), without taking the probe: for choosing among endpoints.
    pub fn allows(&self, now: Instant) -> bool {
        self.state().allows(now, self.cooldown)
    }

    /// Whether this request may go now; when the circuit is half-open, it
    /// becomes the probe and the next ones wait for its outcome.
    pub fn admit(&self, now: Instant) -> bool {
        let mut s = self.state();
        if !s.allows(now, self.cooldown) {
            return false;
        }
        if s.open_until.is_some() {
            s.probe_since = Some(now);
        }
        true
    }

    /// A request succeeded: the circuit closes and the count starts again.
    pub fn succeeded(&self) {
        *self.state() = State::default();
    }

    /// A request failed; true when this failure opened the circuit (the
    /// threshold reached, or the half-open probe failed). A request let
    /// through before the circuit opened that fails after changes nothing.
    pub fn failed(&self) -> bool {
        let mut s = self.state();
        if s.open_until.is_some() {
            if s.probe_since.is_none() {
                return false;
            }
            s.open_until = Some(Instant::now() + self.cooldown);
            s.probe_since = None;
            return true;
        }
        s.failures += 1;
        if s.failures >= self.threshold {
            s.open_until = Some(Instant::now() + self.cooldown);
            s.failures = 0;
            return true;
        }
        false
    }

    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{Router, http::StatusCode, routing::get};

    #[test]
    fn backoff_doubles_and_saturates() {
        let p = Policy {
            timeout: Duration::from_secs(1),
            retries: 3,
            backoff: Duration::from_millis(100),
        };
        assert_eq!(p.delay(0), Duration::ZERO);
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(3), Duration::from_millis(400));
        assert!(p.delay(200) >= Duration::from_secs(1000));
        assert_eq!(p.tries(), 4);
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_and_lets_one_probe_through_after_cooldown() {
        let cooldown = Duration::from_millis(50);
        let b = Breaker::new(2, cooldown);
        assert!(b.admit(Instant::now()));
        assert!(!b.failed());
        assert!(b.failed(), "the second failure in a row opens it");
        assert!(!b.admit(Instant::now()));
        // Half-open: one probe, the others still refused.
        let later = Instant::now() + Duration::from_millis(60);
        assert!(b.allows(later), "could go: no probe out");
        assert!(b.admit(later), "the probe");
        assert!(!b.allows(later) && !b.admit(later), "one probe at a time");
        // The probe fails: open for another cooldown.
        assert!(b.failed(), "a failed probe opens it again");
        assert!(!b.admit(Instant::now()));
        let again = Instant::now() + Duration::from_millis(60);
        assert!(b.admit(again), "the next probe");
        // A probe that never reports gives way after a cooldown.
        assert!(!b.admit(again));
        assert!(b.admit(again + cooldown), "another probe");
        b.succeeded();
        assert!(b.admit(Instant::now()) && b.admit(Instant::now()), "closed");
        assert!(!b.failed(), "a success starts the count again");
        // Opened, then a request let through before fails late: no change.
        assert!(b.failed(), "open");
        assert!(!b.failed(), "a late failure, no probe out");
        let after = Instant::now() + Duration::from_millis(60);
        assert!(b.admit(after), "the cooldown was not pushed out");
    }

    #[test]
    fn a_request_s_own_fault_does_not_count_against_the_endpoint() {
        for s in [400, 413, 422] {
            assert!(!endpoint_fault(s), "{s}");
        }
        for s in [401, 403, 404, 405] {
            assert!(endpoint_fault(s), "{s}");
        }
    }

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn answers_are_classified_capped_and_never_redirected() {
        let base = serve(
            Router::new()
                .route("/ok", get(|| async { "fine" }))
                .route("/big", get(|| async { "x".repeat(10_000) }))
                .route("/busy", get(|| async { StatusCode::TOO_MANY_REQUESTS }))
                .route("/down", get(|| async { StatusCode::BAD_GATEWAY }))
                .route(
                    "/key",
                    get(|| async { (StatusCode::UNAUTHORIZED, "bad key") }),
                )
                .route("/large", get(|| async { StatusCode::PAYLOAD_TOO_LARGE }))
                .route(
                    "/moved",
                    get(|| async { axum::response::Redirect::temporary("/ok") }),
                )
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "late"
                    }),
                ),
        )
        .await;
        let policy = Policy {
            timeout: Duration::from_millis(300),
            retries: 0,
            backoff: Duration::ZERO,
        };
        let http = client(&policy).unwrap();
        let get = |p: &str| exchange(http.get(format!("{base}{p}")), &policy, 1000);
        match get("/ok").await {
            Outcome::Answered { status, body, .. } => {
                assert_eq!((status, body.as_slice()), (200, b"fine".as_slice()))
            }
            o => panic!("{o:?}"),
        }
        for p in ["/busy", "/down", "/slow"] {
            assert!(matches!(get(p).await, Outcome::Retry(_)), "{p}");
        }
        // Too large is too large on every try: refused, not retried.
        assert!(matches!(get("/big").await, Outcome::Refused { .. }));
        match get("/key").await {
            Outcome::Refused {
                status,
                body,
                endpoint_fault,
            } => assert_eq!(
                (status, body.as_str(), endpoint_fault),
                (401, "bad key", true)
            ),
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            get("/large").await,
            Outcome::Refused {
                status: 413,
                endpoint_fault: false,
                ..
            }
        ));
        assert!(matches!(
            get("/moved").await,
            Outcome::Refused {
                status: 307,
                endpoint_fault: true,
                ..
            }
        ));
    }

    #[test]
    fn an_empty_or_unset_key_is_none() {
        assert_eq!(api_key(None), None);
        assert_eq!(api_key(Some("CALLPIPE_REMOTE_TEST_UNSET_VAR")), None);
    }
}
