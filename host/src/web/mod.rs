//! HTTP surface: Twilio's endpoints exactly as the original system exposed
//! them, health, and the live stats. axum stays inside this module.

mod auth;
mod body;
mod dashboard;
mod demo;
mod elsewhere;
mod error;
mod events;
mod health;
mod kb_import;
mod ops;
mod origin;
mod prometheus;
mod session_id;
mod sessions_api;
mod signature;
mod statistics;
mod twilio_routes;
mod ws;

use error::ApiError;

use crate::pipeline::LoadedPipeline;
use crate::pipeline::capacity::Capacity;
use crate::sessions::Sessions;
use crate::twilio::rest::TwilioClient;
use crate::twilio::stream_token::{self, StreamTokens};
use crate::twilio::twiml::StreamMode;
use axum::Router;
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

/// Twilio settings, with the original system's names (TWILIO_*).
#[derive(Clone, Default)]
pub struct TwilioSettings {
    pub account_sid: Option<String>,
    pub auth_token: Option<String>,
    pub phone_number: Option<String>,
    /// Public base URL Twilio reaches us on (https://... or wss://...).
    pub public_url: Option<String>,
    /// How Twilio's routes (webhooks and the stream) are authenticated.
    pub auth: TwilioAuth,
    /// Signs the per-call stream tokens; without it they are signed with a
    /// key derived from the auth token (the same on every instance).
    pub stream_secret: Option<String>,
    pub stream_mode: Option<StreamMode>,
    /// When a media stream that sends no `start`, or goes silent, is closed.
    pub stream_timeouts: crate::calls::media_stream::StreamTimeouts,
}

/// How Twilio's routes are authenticated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TwilioAuth {
    /// `X-Twilio-Signature` checked on webhooks and the stream upgrade, and
    /// each stream's `start` must bring back its call's token.
    Signed,
    /// No auth token to check signatures with: Twilio's routes refuse
    /// every request (the safe default).
    #[default]
    Refused,
    /// Explicitly off (`CALLPIPE_TWILIO_SIGNATURES=off`): anyone who can
    /// reach the server may use them.
    Open,
}

impl TwilioSettings {
    /// The stream tokens' signer, when streams must be signed.
    fn stream_tokens(&self) -> Option<Arc<StreamTokens>> {
        if self.auth != TwilioAuth::Signed {
            return None;
        }
        let key = match (&self.stream_secret, &self.auth_token) {
            (Some(secret), _) => secret.as_bytes().to_vec(),
            (None, Some(token)) => {
                use sha2::Digest;
                sha2::Sha256::new()
                    .chain_update(b"callpipe stream token\0")
                    .chain_update(token.as_bytes())
                    .finalize()
                    .to_vec()
            }
            (None, None) => return None,
        };
        Some(Arc::new(StreamTokens::new(
            &key,
            stream_token::DEFAULT_TTL_SECS,
        )))
    }
}

pub struct AppInner {
    pub twilio_settings: TwilioSettings,
    pub twilio: Option<TwilioClient>,
    /// The pipeline new calls start on (a reload swaps it).
    pub slot: Arc<crate::pipeline::reload::PipelineSlot>,
    pub sessions: Arc<Sessions>,
    pub active_streams: AtomicUsize,
    /// Signs and checks per-call stream tokens (`None` unless `Signed`).
    pub stream_tokens: Option<Arc<StreamTokens>>,
    /// Chat sessions (the text path), each a call on the pipeline.
    pub chats: Arc<crate::calls::chat::ChatCalls>,
    /// Phone calls in progress: chat for one of them joins its pipeline.
    pub live_calls: Arc<crate::calls::live::LiveCalls>,
    /// What the API and dashboard require; `None` only when explicitly off.
    pub api_token: Option<String>,
    /// Loads the pipeline again (`serve` has one; tests may not).
    pub reloader: Option<Arc<crate::pipeline::reload::Reloader>>,
    /// This host among the others sharing its database (`serve` has one).
    pub identity: Option<crate::cluster::Identity>,
    /// Set when the host stops: not ready, no new calls, event streams end.
    pub draining: tokio::sync::watch::Sender<bool>,
    /// Set once the stop's drain is over: the streams still open close.
    pub cut: tokio::sync::watch::Sender<bool>,
    /// Whether this host holds its lease (`serve` has one): without it, it
    /// takes no new call.
    pub lease: Option<Arc<crate::cluster::LeaseHealth>>,
    /// Signs the requests this host forwards and checks those it gets.
    pub cluster_key: Option<crate::cluster::forward::ClusterKey>,
}

#[derive(Clone)]
pub struct AppState(pub Arc<AppInner>);

// Sub-states: a handler that needs only part of the state says so in its
// signature (`State<Arc<Sessions>>`), as axum's `FromRef` allows.
impl axum::extract::FromRef<AppState> for Arc<Sessions> {
    fn from_ref(state: &AppState) -> Self {
        state.sessions.clone()
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// What the app's state is made of, by name: `App::build` fills every
/// part; what a host without a cluster or a reloader lacks stays `None`.
pub struct Parts {
    /// The pipeline new calls start on, and what the host can hold with it.
    pub pipeline: Arc<LoadedPipeline>,
    pub capacity: Capacity,
    pub sessions: Arc<Sessions>,
    pub twilio_settings: TwilioSettings,
    pub twilio: Option<TwilioClient>,
    /// `None` only when the API token is explicitly off.
    pub api_token: Option<String>,
    pub reloader: Option<Arc<crate::pipeline::reload::Reloader>>,
    pub identity: Option<crate::cluster::Identity>,
    pub lease: Option<Arc<crate::cluster::LeaseHealth>>,
    pub cluster_key: Option<crate::cluster::forward::ClusterKey>,
}

impl AppState {
    pub fn new(parts: Parts) -> Self {
        let live_calls = Arc::new(crate::calls::live::LiveCalls::default());
        let stream_tokens = parts.twilio_settings.stream_tokens();
        let max_calls = parts.capacity.calls;
        Self(Arc::new(AppInner {
            stream_tokens,
            twilio_settings: parts.twilio_settings,
            twilio: parts.twilio,
            slot: Arc::new(crate::pipeline::reload::PipelineSlot::new(
                parts.pipeline,
                parts.capacity,
            )),
            sessions: parts.sessions,
            active_streams: AtomicUsize::new(0),
            chats: Arc::new(crate::calls::chat::ChatCalls::new(
                max_calls,
                live_calls.clone(),
            )),
            live_calls,
            api_token: parts.api_token,
            reloader: parts.reloader,
            identity: parts.identity,
            draining: tokio::sync::watch::channel(false).0,
            cut: tokio::sync::watch::channel(false).0,
            lease: parts.lease,
            cluster_key: parts.cluster_key,
        }))
    }

    /// Whether this host lost its lease (it could not reach the database
    /// for a lease's length): another host may soon take it for gone.
    pub fn lease_lost(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| !l.holds())
    }

    /// Whether the host is stopping (SIGTERM): nothing new is taken on.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// The pipeline new calls start on.
    pub fn pipeline(&self) -> Arc<LoadedPipeline> {
        self.slot.get()
    }

    /// What the host can hold with that pipeline, and what limits it.
    pub fn capacity(&self) -> Capacity {
        self.slot.capacity()
    }

    /// Media streams admitted at once: the capacity (within `--max-calls`)
    /// of the pipeline new calls start on (a reload measures it again).
    pub fn max_calls(&self) -> usize {
        self.slot.capacity().calls
    }
}

pub fn router(state: AppState) -> Router {
    // Routes Twilio calls: authenticated by its signature.
    let twilio_webhooks = Router::new()
        .route("/twilio/voice", post(twilio_routes::voice))
        .route("/twilio/status", post(twilio_routes::status_callback))
        .route("/twilio/media-stream", get(ws::media_stream))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            signature::verify,
        ));
    // What people and their tools use: authenticated by the API token.
    let api = Router::new()
        .route("/", get(ops::page))
        .route("/api/ops", get(ops::summary))
        .route("/demo/technician", get(dashboard::page))
        // The original guide's address for the same page.
        .route("/demo/twilio-technician", get(dashboard::page))
        .route("/twilio/initiate-call", post(twilio_routes::initiate_call))
        .route("/twilio/end-call", post(twilio_routes::end_call))
        .route(
            "/twilio/call-status/{call_sid}",
            get(twilio_routes::call_status),
        )
        .route("/twilio/test-twiml", get(twilio_routes::test_twiml))
        .route(
            "/demo/send-demo-transcription",
            post(demo::send_demo_transcription),
        )
        .route("/demo/end-demo-call", post(demo::end_demo_call))
        .route(
            "/demo/get-session-suggestions",
            get(demo::get_session_suggestions),
        )
        .route("/api/stats", get(health::stats))
        .route("/api/sessions", get(sessions_api::list))
        .route("/api/sessions/{id}", get(sessions_api::get))
        .route("/api/sessions/{id}/events", get(events::stream))
        .route("/api/sessions/{id}/mute", post(sessions_api::mute))
        .route("/api/sessions/{id}/context", post(sessions_api::context))
        .route("/api/pipelines/reload", post(ops::reload))
        .route(
            "/api/kb/import",
            post(kb_import::import)
                .layer(axum::extract::DefaultBodyLimit::max(kb_import::MAX_BODY)),
        )
        .route_layer(axum::middleware::from_fn(origin::same_origin))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    Router::new()
        .merge(twilio_webhooks)
        .merge(api)
        .route("/metrics", get(prometheus::metrics))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        // Script and style of the pages: nothing secret in them.
        .route("/assets/{file}", get(dashboard::asset))
        .with_state(state)
}
