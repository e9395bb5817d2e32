//! `llm`: chat completion for stages, over any OpenAI-compatible
//! `/v1/chat/completions` endpoint (OpenAI, Mistral, Groq, vLLM, Ollama,
//! llama.cpp's server), as `[capabilities.llm]` configures it.
//!
//! Each try has a timeout; 429, 5xx, timeouts and unreachable endpoints
//! are retried with exponential backoff while the stage's deadline allows;
//! a circuit breaker stops calling an endpoint that keeps failing; at most
//! `max_concurrent` requests are in flight. Prompts and completions are
//! logged at debug level only: they carry what technicians said.

use super::CapabilityContext;
use crate::bindings::llm::{Completion, CompletionRequest, Host, LlmError, Role};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// `[capabilities.llm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "kebab-case")]
pub enum LlmConfig {
    /// Any OpenAI-compatible `/v1/chat/completions` endpoint.
    Openai {
        /// Base URL up to and including `/v1`.
        url: String,
        model: String,
        /// The variable holding the API key (none for a local server).
        #[serde(default)]
        api_key_env: Option<String>,
        /// Per try.
        #[serde(default = "timeout_ms")]
        timeout_ms: u64,
        /// Tries after the first (429, 5xx, timeouts, connection errors).
        #[serde(default = "retries")]
        retries: u32,
        #[serde(default = "backoff_ms")]
        backoff_ms: u64,
        /// Requests in flight at once; more wait (within their deadline).
        #[serde(default = "max_concurrent")]
        max_concurrent: usize,
        /// Failed requests in a row that open the circuit...
        #[serde(default = "breaker_failures")]
        breaker_failures: u32,
        /// ...for this long.
        #[serde(default = "breaker_cooldown_ms")]
        breaker_cooldown_ms: u64,
        /// Longest prompt (all messages), in characters.
        #[serde(default = "max_prompt_chars")]
        max_prompt_chars: usize,
    },
}

fn timeout_ms() -> u64 {
    10_000
}
fn retries() -> u32 {
    1
}
fn backoff_ms() -> u64 {
    200
}
fn max_concurrent() -> usize {
    4
}
fn breaker_failures() -> u32 {
    5
}
fn breaker_cooldown_ms() -> u64 {
    30_000
}
fn max_prompt_chars() -> usize {
    16_000
}

#[derive(Debug, thiserror::Error)]
pub enum LlmSetupError {
    #[error("[capabilities.llm]: {0}")]
    Config(String),
}

impl LlmConfig {
    pub fn build(&self) -> Result<LlmService, LlmSetupError> {
        let LlmConfig::Openai {
            url,
            model,
            api_key_env,
            timeout_ms,
            retries,
            backoff_ms,
            max_concurrent,
            breaker_failures,
            breaker_cooldown_ms,
            max_prompt_chars,
        } = self;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(LlmSetupError::Config(format!(
                "url = \"{url}\" is not an http(s) address"
            )));
        }
        if model.trim().is_empty() {
            return Err(LlmSetupError::Config("`model` is empty".into()));
        }
        let policy = callpipe_remote::Policy {
            timeout: Duration::from_millis(*timeout_ms),
            retries: *retries,
            backoff: Duration::from_millis(*backoff_ms),
        };
        let http =
            callpipe_remote::client(&policy).map_err(|e| LlmSetupError::Config(e.to_string()))?;
        Ok(LlmService {
            http,
            endpoint: format!("{}/chat/completions", url.trim_end_matches('/')),
            model: model.clone(),
            api_key: callpipe_remote::api_key(api_key_env.as_deref()),
            policy,
            permits: tokio::sync::Semaphore::new((*max_concurrent).max(1)),
            breaker: callpipe_remote::Breaker::new(
                *breaker_failures,
                Duration::from_millis(*breaker_cooldown_ms),
            ),
            max_prompt_chars: *max_prompt_chars,
        })
    }
}

/// A configured endpoint, shared by every stage instance of the pipeline.
pub struct LlmService {
    http: reqwest::Client,
    endpoint: String,
    model: String,
    api_key: Option<String>,
    policy: callpipe_remote::Policy,
    permits: tokio::sync::Semaphore,
    breaker: callpipe_remote::Breaker,
    max_prompt_chars: usize,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireAnswer,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireAnswer {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

enum Attempt {
    Done(Completion),
    Retry(String),
    Fail(LlmError),
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

impl LlmService {
    pub fn summary(&self) -> String {
        format!("openai-compatible {} model {}", self.endpoint, self.model)
    }

    fn check(&self, request: &CompletionRequest) -> Result<(), LlmError> {
        if request.messages.is_empty() {
            return Err(LlmError::InvalidRequest("no messages".into()));
        }
        let chars: usize = request
            .messages
            .iter()
            .map(|m| m.content.chars().count())
            .sum();
        if chars > self.max_prompt_chars {
            return Err(LlmError::InvalidRequest(format!(
                "a prompt of {chars} characters (at most {})",
                self.max_prompt_chars
            )));
        }
        if request.max_tokens == 0 {
            return Err(LlmError::InvalidRequest("max-tokens is 0".into()));
        }
        if let Some(schema) = &request.json_schema
            && serde_json::from_str::<serde_json::Value>(schema).is_err()
        {
            return Err(LlmError::InvalidRequest(
                "json-schema is not valid JSON".into(),
            ));
        }
        Ok(())
    }

    /// One completion within `request.deadline_ms`: retries, backoff and
    /// waiting for a permit all count against it.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<Completion, LlmError> {
        self.check(request)?;
        let deadline = Duration::from_millis(u64::from(request.deadline_ms.max(1)));
        match tokio::time::timeout(deadline, self.complete_within(request)).await {
            Ok(result) => result,
            Err(_) => {
                // A hung endpoint is a failing one, even when the stage's
                // deadline, not a try's timeout, is what ran out.
                self.count_failure();
                Err(LlmError::Timeout(format!(
                    "no completion within the stage's {} ms",
                    request.deadline_ms
                )))
            }
        }
    }

    async fn complete_within(&self, request: &CompletionRequest) -> Result<Completion, LlmError> {
        if !self.breaker.admit(Instant::now()) {
            return Err(LlmError::Unavailable(format!(
                "circuit open after {} failed requests",
                self.breaker.threshold()
            )));
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LlmError::Unavailable("shutting down".into()))?;
        let body = self.body(request);
        tracing::debug!(endpoint = %self.endpoint, "llm request: {body}");
        let mut last = String::new();
        for attempt in 0..self.policy.tries() {
            self.policy.wait(attempt).await;
            match self.attempt(&body).await {
                Attempt::Done(c) => {
                    self.breaker.succeeded();
                    crate::metrics::LLM_TOKENS.add(c.prompt_tokens, c.completion_tokens);
                    tracing::debug!(endpoint = %self.endpoint, "llm completion: {}", c.text);
                    return Ok(c);
                }
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(why) => {
                    tracing::warn!(attempt, endpoint = %self.endpoint, "llm endpoint: {why}");
                    last = why;
                }
            }
        }
        self.count_failure();
        Err(LlmError::Unavailable(format!(
            "{} tries failed, last: {last}",
            self.policy.tries()
        )))
    }

    fn body(&self, request: &CompletionRequest) -> serde_json::Value {
        let messages: Vec<WireMessage<'_>> = request
            .messages
            .iter()
            .map(|m| WireMessage {
                role: role_name(m.role),
                content: &m.content,
            })
            .collect();
        let mut body = serde_json::json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature.clamp(0.0, 2.0),
            "stream": false,
        });
        if let Some(schema) = &request.json_schema
            && let Ok(schema) = serde_json::from_str::<serde_json::Value>(schema)
        {
            body["response_format"] = serde_json::json!({
                "type": "json_schema",
                "json_schema": { "name": "answer", "schema": schema, "strict": true },
            });
        }
        body
    }

    async fn attempt(&self, body: &serde_json::Value) -> Attempt {
        let mut request = self.http.post(&self.endpoint).json(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let body = match callpipe_remote::exchange(request, &self.policy, MAX_ANSWER_BYTES).await {
            callpipe_remote::Outcome::Answered { body, .. } => body,
            callpipe_remote::Outcome::Retry(why) => return Attempt::Retry(why),
            callpipe_remote::Outcome::Refused {
                status,
                body,
                endpoint_fault,
            } => {
                if endpoint_fault {
                    self.count_failure();
                }
                return Attempt::Fail(LlmError::Refused(format!(
                    "endpoint refused the request ({status}): {body}"
                )));
            }
        };
        let answer: WireResponse = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => return Attempt::Retry(format!("unreadable answer: {e}")),
        };
        let usage = answer.usage.unwrap_or_default();
        let Some(choice) = answer.choices.into_iter().next() else {
            return Attempt::Fail(LlmError::Refused("the answer has no choice".into()));
        };
        if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
            return Attempt::Fail(LlmError::Refused(refusal));
        }
        if choice.finish_reason.as_deref() == Some("content_filter") {
            return Attempt::Fail(LlmError::Refused("stopped by a content filter".into()));
        }
        let text = choice
            .message
            .content
            .unwrap_or_default()
            .trim()
            .to_string();
        if text.is_empty() {
            return Attempt::Fail(LlmError::Refused("an empty completion".into()));
        }
        Attempt::Done(Completion {
            text,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        })
    }

    fn count_failure(&self) {
        if self.breaker.failed() {
            tracing::error!(
                endpoint = %self.endpoint,
                "llm endpoint keeps failing: circuit open for {:?}",
                self.breaker.cooldown()
            );
        }
    }
}

/// The most of an answer that is read: a completion of a few hundred
/// tokens is a few KiB; an endpoint that sends more is not one.
const MAX_ANSWER_BYTES: usize = 1 << 20;

impl Host for CapabilityContext {
    async fn complete(
        &mut self,
        request: CompletionRequest,
    ) -> wasmtime::Result<Result<Completion, LlmError>> {
        let started = Instant::now();
        let result = match self.set.get::<LlmService>() {
            Some(llm) => llm.complete(&request).await,
            None => Err(LlmError::NotConfigured(
                "the `llm` capability has no backend configured in this host \
                 (pipeline section [capabilities.llm])"
                    .into(),
            )),
        };
        use crate::metrics::Outcome;
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(LlmError::Timeout(_)) => Outcome::Timeout,
            Err(LlmError::Unavailable(_) | LlmError::NotConfigured(_)) => Outcome::Unavailable,
            Err(LlmError::InvalidRequest(_)) => Outcome::Invalid,
            Err(LlmError::Refused(_)) => Outcome::Error,
        };
        METRICS.record(started.elapsed(), outcome);
        if let Ok(c) = &result {
            self.model_replies.push(&c.text);
        }
        if let Err(e) = &result {
            tracing::warn!(
                call = %self.context.call_id,
                stage = %self.context.stage,
                "llm: {}",
                describe(e)
            );
        }
        Ok(result)
    }
}

/// An error as one line (its kind and why), for logs and fallbacks.
pub fn describe(e: &LlmError) -> String {
    match e {
        LlmError::NotConfigured(m) => format!("not configured: {m}"),
        LlmError::Timeout(m) => format!("timeout: {m}"),
        LlmError::Unavailable(m) => format!("unavailable: {m}"),
        LlmError::Refused(m) => format!("refused: {m}"),
        LlmError::InvalidRequest(m) => format!("invalid request: {m}"),
    }
}

/// The `llm` capability (see `factor`). It is optional by design: every
/// stage that asks a model keeps a model-free path, so one component serves
/// pipelines with and without a model, and a stage that imports it without
/// the grant is linked to [`NotGranted`].
pub struct LlmFactor;

/// Calls from stages to `llm`, by outcome and latency (/metrics).
pub static METRICS: crate::metrics::CapabilityMetrics =
    crate::metrics::CapabilityMetrics::new("llm");

impl<T: Send + 'static> super::Factor<T> for LlmFactor {
    fn name(&self) -> &'static str {
        "llm"
    }

    fn interface(&self) -> &'static str {
        "callpipe:stage/llm"
    }

    fn metrics(&self) -> Option<&'static crate::metrics::CapabilityMetrics> {
        Some(&METRICS)
    }

    fn build<'a>(
        &'a self,
        section: &'a toml::Table,
        _setup: super::Setup<'a>,
        set: &'a mut super::CapabilitySet,
    ) -> super::factor::BuildFuture<'a> {
        Box::pin(async move {
            let config: LlmConfig = super::factor::typed("llm", section)?;
            let built = config.build().map_err(|e| e.to_string())?;
            tracing::info!("llm: {}", built.summary());
            set.insert(std::sync::Arc::new(built));
            Ok(())
        })
    }

    /// A stage that asks the model gives each request its budget
    /// (`llm_timeout_ms` in its config); a try longer than that budget would
    /// be cut by the stage before it could fail on its own, so the
    /// endpoint's failures would never be seen.
    fn check(
        &self,
        section: &toml::Table,
        stages: &[super::factor::StageView<'_>],
    ) -> Vec<(Option<String>, String)> {
        let Some(per_try) = section.get("timeout_ms").and_then(toml::Value::as_integer) else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        for s in stages.iter().filter(|s| s.granted) {
            let budget = s
                .config
                .and_then(|c| c.get("llm_timeout_ms"))
                .and_then(toml::Value::as_integer);
            if let Some(budget) = budget
                && per_try > budget
            {
                problems.push((
                    Some(s.name.to_string()),
                    format!(
                        "[capabilities.llm] timeout_ms = {per_try} (one try) is longer than this \
                         stage's llm_timeout_ms = {budget}: the stage would give up before a hung \
                         endpoint is counted as failing; make timeout_ms at most {budget}"
                    ),
                ));
            }
        }
        problems
    }

    fn link(
        &self,
        linker: &mut wasmtime::component::Linker<T>,
        context: super::factor::ContextOf<T>,
    ) -> wasmtime::Result<()> {
        crate::bindings::llm::add_to_linker::<T, wasmtime::component::HasSelf<CapabilityContext>>(
            linker, context,
        )
    }

    fn optional(&self) -> bool {
        true
    }

    fn link_ungranted(&self, linker: &mut wasmtime::component::Linker<T>) -> wasmtime::Result<()> {
        crate::bindings::llm::add_to_linker::<T, NotGranted>(linker, |_| NotGranted)
    }
}

/// The `llm` of a stage that is not granted it: every call is refused at
/// once, so the stage takes its model-free path.
pub struct NotGranted;

impl wasmtime::component::HasData for NotGranted {
    type Data<'a> = NotGranted;
}

impl Host for NotGranted {
    async fn complete(
        &mut self,
        _request: CompletionRequest,
    ) -> wasmtime::Result<Result<Completion, LlmError>> {
        Ok(Err(LlmError::NotConfigured(
            "this stage is not granted `llm` (add it to the stage's `grants` and configure \
             [capabilities.llm])"
                .into(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::llm::Message;
    use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// A test-only OpenAI-compatible server: answers each request with the
    /// next scripted reply, and keeps what it was sent.
    /// (status, body, delay in ms)
    type Reply = (u16, serde_json::Value, u64);
    /// (Authorization header, body)
    type Seen = (Option<String>, serde_json::Value);

    #[derive(Clone, Default)]
    struct Stand {
        replies: Arc<Mutex<Vec<Reply>>>,
        seen: Arc<Mutex<Vec<Seen>>>,
        calls: Arc<AtomicUsize>,
    }

    async fn serve(stand: Stand) -> String {
        async fn chat(
            State(s): State<Stand>,
            headers: axum::http::HeaderMap,
            Json(body): Json<serde_json::Value>,
        ) -> (StatusCode, Json<serde_json::Value>) {
            s.calls.fetch_add(1, Ordering::SeqCst);
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            s.seen.lock().expect("seen").push((auth, body));
            let next = {
                let mut r = s.replies.lock().expect("replies");
                if r.is_empty() {
                    (500, serde_json::json!({"error": "no reply scripted"}), 0)
                } else {
                    r.remove(0)
                }
            };
            if next.2 > 0 {
                tokio::time::sleep(Duration::from_millis(next.2)).await;
            }
            (StatusCode::from_u16(next.0).expect("status"), Json(next.1))
        }
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(stand);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        format!("http://{addr}/v1")
    }

    fn answer(text: &str) -> serde_json::Value {
        serde_json::json!({
            "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 21, "completion_tokens": 7}
        })
    }

    fn service(url: &str, extra: &str) -> LlmService {
        let toml = format!(
            "backend = \"openai\"\nurl = \"{url}\"\nmodel = \"test-model\"\napi_key_env = \"CALLPIPE_TEST_LLM_KEY\"\nbackoff_ms = 10\n{extra}"
        );
        let config: LlmConfig = toml::from_str(&toml).expect("config");
        config.build().expect("build")
    }

    fn request(deadline_ms: u32) -> CompletionRequest {
        CompletionRequest {
            messages: vec![
                Message {
                    role: Role::System,
                    content: "Pose une question.".into(),
                },
                Message {
                    role: Role::User,
                    content: "La caméra ne marche plus.".into(),
                },
            ],
            max_tokens: 60,
            temperature: 0.2,
            json_schema: None,
            deadline_ms,
        }
    }

    #[tokio::test]
    async fn a_completion_sends_the_messages_and_counts_tokens() {
        // SAFETY: set before any thread of this test reads it; no other test uses it.
        unsafe { std::env::set_var("CALLPIPE_TEST_LLM_KEY", "sk-test") };
        let stand = Stand::default();
        stand.replies.lock().expect("replies").push((
            200,
            answer("La caméra est-elle alimentée ?"),
            0,
        ));
        let url = serve(stand.clone()).await;
        let llm = service(&url, "");
        let before = crate::metrics::LLM_TOKENS.prompt();
        let mut req = request(2_000);
        req.json_schema = Some(r#"{"type":"object"}"#.into());
        let c = llm.complete(&req).await.expect("completion");
        assert_eq!(c.text, "La caméra est-elle alimentée ?");
        assert_eq!((c.prompt_tokens, c.completion_tokens), (21, 7));
        assert!(crate::metrics::LLM_TOKENS.prompt() >= before + 21);
        let seen = stand.seen.lock().expect("seen");
        let (auth, body) = &seen[0];
        assert_eq!(auth.as_deref(), Some("Bearer sk-test"));
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "La caméra ne marche plus.");
        assert_eq!(body["max_tokens"], 60);
        assert_eq!(body["response_format"]["type"], "json_schema");
    }

    #[tokio::test]
    async fn overload_and_server_errors_are_retried_client_errors_are_refusals() {
        let stand = Stand::default();
        stand.replies.lock().expect("replies").extend([
            (429, serde_json::json!({}), 0),
            (503, serde_json::json!({}), 0),
            (200, answer("Depuis quand ?"), 0),
            (400, serde_json::json!({"error": "bad"}), 0),
        ]);
        let url = serve(stand.clone()).await;
        let llm = service(&url, "retries = 2");
        let c = llm.complete(&request(5_000)).await.expect("third try");
        assert_eq!(c.text, "Depuis quand ?");
        assert_eq!(stand.calls.load(Ordering::SeqCst), 3);
        match llm.complete(&request(5_000)).await {
            Err(LlmError::Refused(m)) => assert!(m.contains("400"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            stand.calls.load(Ordering::SeqCst),
            4,
            "a 400 is not retried"
        );
    }

    #[tokio::test]
    async fn a_slow_endpoint_times_out_within_the_stage_deadline() {
        let stand = Stand::default();
        stand
            .replies
            .lock()
            .expect("replies")
            .push((200, answer("trop tard"), 2_000));
        let url = serve(stand).await;
        let llm = service(&url, "");
        let started = Instant::now();
        match llm.complete(&request(150)).await {
            Err(LlmError::Timeout(_)) => {}
            other => panic!("{other:?}"),
        }
        // Bounded by the deadline, not by the endpoint's 2 s.
        assert!(started.elapsed() < Duration::from_millis(1_500));
    }

    /// An endpoint that accepts and never answers: the stage's deadline
    /// cuts each request, each counts as a failure, and once the circuit is
    /// open the next request is refused without reaching the endpoint.
    #[tokio::test]
    async fn a_hung_endpoint_opens_the_circuit() {
        let stand = Stand::default();
        stand.replies.lock().expect("replies").extend([
            (200, answer("trop tard"), 5_000),
            (200, answer("trop tard"), 5_000),
        ]);
        let url = serve(stand.clone()).await;
        let llm = service(&url, "retries = 0\nbreaker_failures = 2");
        for _ in 0..2 {
            assert!(matches!(
                llm.complete(&request(100)).await,
                Err(LlmError::Timeout(_))
            ));
        }
        let calls = stand.calls.load(Ordering::SeqCst);
        match llm.complete(&request(100)).await {
            Err(LlmError::Unavailable(m)) => assert!(m.contains("circuit open"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            stand.calls.load(Ordering::SeqCst),
            calls,
            "not called while open"
        );
    }

    /// Half-open: once the cooldown is over, one request reaches the
    /// endpoint (the probe) while another is still refused, and the probe's
    /// success closes the circuit.
    #[tokio::test]
    async fn after_the_cooldown_one_probe_goes_and_its_success_closes_the_circuit() {
        let stand = Stand::default();
        stand.replies.lock().expect("replies").extend([
            (200, answer("trop tard"), 5_000),
            (200, answer("trop tard"), 5_000),
            (200, answer("Depuis quand ?"), 0),
            (200, answer("Et la caméra ?"), 0),
        ]);
        let url = serve(stand.clone()).await;
        let llm = service(
            &url,
            "retries = 0\nbreaker_failures = 2\nbreaker_cooldown_ms = 100",
        );
        for _ in 0..2 {
            assert!(matches!(
                llm.complete(&request(100)).await,
                Err(LlmError::Timeout(_))
            ));
        }
        // The cooldown passes (the breaker reads std's clock, not tokio's,
        // so no paused time): wait until it lets a probe go.
        let until = Instant::now() + Duration::from_secs(10);
        while !llm.breaker.allows(Instant::now()) {
            assert!(Instant::now() < until, "the cooldown never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (first, second) = (request(2_000), request(2_000));
        let (probe, other) = tokio::join!(llm.complete(&first), llm.complete(&second));
        assert_eq!(probe.expect("the probe").text, "Depuis quand ?");
        match other {
            Err(LlmError::Unavailable(m)) => assert!(m.contains("circuit open"), "{m}"),
            other => panic!("{other:?}"),
        }
        let closed = llm.complete(&request(2_000)).await.expect("closed again");
        assert_eq!(closed.text, "Et la caméra ?");
        assert_eq!(stand.calls.load(Ordering::SeqCst), 4);
    }

    /// A refused key (401) fails every request: it counts towards the
    /// circuit; a 400 (this request's content) does not.
    #[tokio::test]
    async fn a_refused_key_opens_the_circuit_a_bad_request_does_not() {
        let stand = Stand::default();
        stand.replies.lock().expect("replies").extend([
            (400, serde_json::json!({"error": "bad"}), 0),
            (400, serde_json::json!({"error": "bad"}), 0),
            (401, serde_json::json!({"error": "key"}), 0),
            (401, serde_json::json!({"error": "key"}), 0),
        ]);
        let url = serve(stand.clone()).await;
        let llm = service(&url, "retries = 0\nbreaker_failures = 2");
        for _ in 0..4 {
            assert!(matches!(
                llm.complete(&request(2_000)).await,
                Err(LlmError::Refused(_))
            ));
        }
        match llm.complete(&request(2_000)).await {
            Err(LlmError::Unavailable(m)) => assert!(m.contains("circuit open"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(stand.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_failing_endpoint_opens_the_circuit() {
        let stand = Stand::default();
        let url = serve(stand.clone()).await; // every reply is a 500
        let llm = service(&url, "retries = 0\nbreaker_failures = 2");
        for _ in 0..2 {
            assert!(matches!(
                llm.complete(&request(2_000)).await,
                Err(LlmError::Unavailable(_))
            ));
        }
        let calls = stand.calls.load(Ordering::SeqCst);
        match llm.complete(&request(2_000)).await {
            Err(LlmError::Unavailable(m)) => assert!(m.contains("circuit open"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            stand.calls.load(Ordering::SeqCst),
            calls,
            "not called while open"
        );
    }

    #[tokio::test]
    async fn bad_requests_never_reach_the_endpoint() {
        let stand = Stand::default();
        let url = serve(stand.clone()).await;
        let llm = service(&url, "max_prompt_chars = 10");
        let mut empty = request(1_000);
        empty.messages.clear();
        assert!(matches!(
            llm.complete(&empty).await,
            Err(LlmError::InvalidRequest(_))
        ));
        assert!(matches!(
            llm.complete(&request(1_000)).await,
            Err(LlmError::InvalidRequest(m)) if m.contains("at most 10")
        ));
        assert_eq!(stand.calls.load(Ordering::SeqCst), 0);
        let bad: Result<LlmConfig, _> =
            toml::from_str("backend = \"openai\"\nurl = \"x\"\nmodel = \"m\"");
        assert!(bad.expect("parses").build().is_err());
    }
}
