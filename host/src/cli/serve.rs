use crate::pipeline::{Runtime, RuntimeConfig};
use crate::twilio::rest::TwilioClient;
use crate::twilio::twiml::StreamMode;
use crate::web::{self, AppState, TwilioAuth, TwilioSettings};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Toggle {
    /// Checked with TWILIO_AUTH_TOKEN; without it Twilio's routes refuse everything.
    Auto,
    /// Checked; refuse to start without TWILIO_AUTH_TOKEN.
    On,
    /// Not checked: anyone may post webhooks and open streams (local tries only).
    Off,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// <Connect><Stream>: bidirectional, the caller's track; callpipe can speak.
    Connect,
    /// <Start><Stream track="both_tracks">: listen to technician and agent.
    Start,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "CALLPIPE_LISTEN", default_value = "0.0.0.0:8000")]
    listen: SocketAddr,
    /// The pipeline new calls run on.
    #[arg(
        long,
        env = "CALLPIPE_PIPELINE",
        default_value = "pipelines/technician-support.toml"
    )]
    pipeline: PathBuf,
    /// Concurrent calls accepted; more are refused with 503.
    #[arg(long, env = "CALLPIPE_MAX_CALLS", default_value_t = 1000)]
    max_calls: usize,
    /// Where calls, transcripts and suggestions are recorded:
    /// postgres://USER:PASSWORD@HOST/DB, or sqlite://FILE. Default: a SQLite
    /// file in the data dir (callpipe.db).
    #[arg(long, env = "CALLPIPE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Twilio account SID (AC...).
    #[arg(long, env = "TWILIO_ACCOUNT_SID", hide_env_values = true)]
    twilio_account_sid: Option<String>,
    /// Twilio auth token: authenticates REST calls and checks webhook signatures.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    twilio_auth_token: Option<String>,
    /// The Twilio number calls are made from (E.164).
    #[arg(long, env = "TWILIO_PHONE_NUMBER")]
    twilio_phone_number: Option<String>,
    /// Public base URL Twilio reaches this server on (e.g. https://example.ngrok.app).
    #[arg(long, env = "TWILIO_WEBSOCKET_URL")]
    twilio_websocket_url: Option<String>,
    /// Twilio REST API base URL (point it at a stand-in for testing).
    #[arg(
        long,
        env = "CALLPIPE_TWILIO_API_URL",
        default_value = "https://api.twilio.com"
    )]
    twilio_api_url: String,
    /// Check X-Twilio-Signature on webhooks and the media-stream upgrade, and
    /// each stream's per-call token.
    #[arg(
        long,
        env = "CALLPIPE_TWILIO_SIGNATURES",
        value_enum,
        default_value = "auto"
    )]
    twilio_signatures: Toggle,
    /// Secret that signs each call's media-stream token (default: derived
    /// from TWILIO_AUTH_TOKEN). Give every instance behind one balancer the same.
    #[arg(long, env = "CALLPIPE_STREAM_SECRET", hide_env_values = true)]
    stream_secret: Option<String>,
    /// Close a media stream that sends no `start` within this many ms.
    #[arg(
        long,
        env = "CALLPIPE_STREAM_START_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    stream_start_timeout_ms: u64,
    /// Close a started media stream silent for this many ms (Twilio sends
    /// audio every 20 ms, silence included).
    #[arg(
        long,
        env = "CALLPIPE_STREAM_IDLE_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    stream_idle_timeout_ms: u64,
    /// How TwiML streams calls by default.
    #[arg(
        long,
        env = "CALLPIPE_STREAM_MODE",
        value_enum,
        default_value = "connect"
    )]
    stream_mode: Mode,
    /// Token the API and dashboard require (as `Authorization: Bearer`, or
    /// once as `?token=` in the browser). `off` disables it, for local use
    /// only. Unset: one is made at first start and kept in DATA_DIR/api-token.
    #[arg(long, env = "CALLPIPE_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// How often the pipeline file and its components are checked for
    /// changes (hot reload); 0 turns watching off (POST
    /// /api/pipelines/reload still works).
    #[arg(long, env = "CALLPIPE_WATCH_MS", default_value_t = 1000)]
    watch_ms: u64,
    /// This host's name among the hosts sharing the database (default:
    /// HOSTNAME:PORT). Calls record it; at start a host interrupts only
    /// its own unfinished calls.
    #[arg(long, env = "CALLPIPE_HOST_ID")]
    host_id: Option<String>,
    /// Where the other hosts reach this one (chat and mute for a call it
    /// runs are forwarded there). Default: http:// and the listen address.
    #[arg(long, env = "CALLPIPE_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// The secret the hosts sharing a database sign the requests they
    /// forward to each other with (HMAC-SHA256; at least 16 bytes, the same
    /// on every host). Without it a request about a call another host runs
    /// is refused with 503; the user's API token is never sent to a host.
    #[arg(long, env = "CALLPIPE_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// The host's lease in the database, in ms: renewed every third of it;
    /// once it expires the other hosts mark the host's calls interrupted.
    #[arg(long, env = "CALLPIPE_LEASE_MS", default_value_t = 15_000)]
    lease_ms: u64,
    /// How long after a host's lease expired (on the database's clock) the
    /// others end its calls as interrupted, in ms; default: one lease. A
    /// host back within the grace finds its calls untouched; one back later
    /// reclaims those it still runs.
    #[arg(long, env = "CALLPIPE_LEASE_GRACE_MS")]
    lease_grace_ms: Option<u64>,
    /// Seconds a call may ring with no host (its TwiML served, its stream
    /// never started) before any host ends it as interrupted.
    #[arg(long, env = "CALLPIPE_UNSTARTED_S", default_value_t = 600)]
    unstarted_s: u64,
    /// On SIGTERM, seconds the live calls get to finish (no new call is
    /// taken meanwhile, /ready says 503) before they are cut.
    #[arg(long, env = "CALLPIPE_DRAIN_S", default_value_t = 30)]
    drain_s: u64,
    /// On SIGTERM, seconds the whole stop may take: the drain, the end of
    /// chat sessions and the last writes to the store fit in it (the drain
    /// is shortened to leave the rest 10 s). Keep the supervisor's grace
    /// period above it (Kubernetes' terminationGracePeriodSeconds,
    /// systemd's TimeoutStopSec, compose's stop_grace_period).
    #[arg(long, env = "CALLPIPE_SHUTDOWN_S", default_value_t = 40)]
    shutdown_s: u64,
    /// Seconds an ended session stays in memory; after that the store
    /// answers for it.
    #[arg(long, env = "CALLPIPE_SESSION_GRACE_S", default_value_t = 60)]
    session_grace_s: u64,
}

/// The token file in the data dir; `callpipe simulate` reads it too.
pub const TOKEN_FILE: &str = "api-token";

/// What CALLPIPE_API_TOKEN (or --api-token) says.
pub enum TokenSetting {
    /// `off`: no token, for local use.
    Off,
    Given(String),
    /// Unset or empty: the one kept in the data dir.
    Stored,
}

pub fn token_setting(given: Option<&str>) -> TokenSetting {
    match given.map(str::trim) {
        Some("off") => TokenSetting::Off,
        Some(t) if !t.is_empty() => TokenSetting::Given(t.to_string()),
        _ => TokenSetting::Stored,
    }
}

/// The token kept in the data dir, if there is one.
pub fn stored_token(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The API token: given, explicitly off (`None`), or the data dir's own,
/// made on first use. The bool says whether it was made or read here.
fn api_token(given: Option<&str>, data_dir: &Path) -> anyhow::Result<(Option<String>, bool)> {
    match token_setting(given) {
        TokenSetting::Off => Ok((None, false)),
        TokenSetting::Given(t) => Ok((Some(t), false)),
        TokenSetting::Stored => {
            if let Some(t) = stored_token(data_dir) {
                return Ok((Some(t), true));
            }
            let path = data_dir.join(TOKEN_FILE);
            let mut bytes = [0u8; 24];
            getrandom::fill(&mut bytes)
                .map_err(|e| anyhow::anyhow!("cannot make an API token: {e}"))?;
            let token = hex::encode(bytes);
            write_private(&path, &token)
                .with_context(|| format!("cannot write the API token to {}", path.display()))?;
            Ok((Some(token), true))
        }
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

pub async fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let stages_per_call = 8u32; // headroom for pipelines that grow
    // The pool's slots are memory mappings from the start: sized for more
    // calls than fit under vm.max_map_count, it takes what calls need.
    let pool_calls = crate::pipeline::capacity::pool_calls(
        args.max_calls,
        stages_per_call.into(),
        crate::pipeline::capacity::max_map_count(),
    );
    let mut config = RuntimeConfig::new(data_dir);
    config.max_instances = config
        .max_instances
        .max((pool_calls as u32 + 4) * stages_per_call);
    let runtime = Runtime::new(config)?;
    super::first_run::fetch_default_models(&args.pipeline, data_dir).await?;
    let pipeline = match super::load_pipeline(&runtime, &args.pipeline, data_dir).await {
        Ok(p) => Arc::new(p),
        Err(diags) => {
            eprintln!("{diags}");
            return Ok(ExitCode::FAILURE);
        }
    };
    crate::pipeline::reload::seed_knowledge(&pipeline).await?;
    // Bound now: the port is part of this host's default id.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let identity = crate::cluster::Identity::new(
        args.host_id.as_deref(),
        args.advertise_url.as_deref(),
        args.listen,
        addr,
    );
    let cluster_key = crate::cluster::forward::ClusterKey::new(
        args.cluster_secret.as_deref().unwrap_or_default(),
    )
    .map_err(anyhow::Error::msg)?;
    let store = Arc::new(crate::store::Store::open(data_dir, args.database_url.as_deref()).await?);
    if store.backend() == "postgres" && cluster_key.is_none() {
        tracing::warn!(
            "CALLPIPE_CLUSTER_SECRET is unset: if other hosts share this database, requests \
             about a call one of them runs (chat, mute, end) are refused here instead of \
             handed over"
        );
    }
    store.set_host(&identity.id);
    tracing::info!(
        host = %identity.id,
        "database: {} ({})",
        store.display,
        store.backend()
    );
    crate::pipeline::reload::record(&store, &pipeline).await?;
    let sessions = Arc::new(crate::sessions::Sessions::with_store(store.clone()));
    let lease = Duration::from_millis(args.lease_ms.max(300));
    let timing = crate::cluster::Timing {
        lease,
        grace: args.lease_grace_ms.map_or(lease, Duration::from_millis),
        unstarted: Duration::from_secs(args.unstarted_s.max(1)),
    };
    // The lease first: a second process given this host's id must not
    // touch its calls.
    let cluster =
        crate::cluster::Cluster::join(identity.clone(), store.clone(), sessions.clone(), timing)
            .await
            .context("cannot join the hosts sharing the database")?;
    let cut = store.interrupt_unfinished(&identity.id).await?;
    if !cut.is_empty() {
        tracing::warn!(
            "{} call(s) of this host were cut by its last stop and are marked interrupted",
            cut.len()
        );
    }
    {
        // Stage failures go to the store too (the ops page lists them).
        let sessions = Arc::downgrade(&sessions);
        crate::metrics::STAGE_FAILURES.set_sink(move |f| {
            if let Some(s) = sessions.upgrade() {
                s.record_stage_error(f);
            }
        });
    }

    let token = args.twilio_auth_token.filter(|t| !t.is_empty());
    let sid = args.twilio_account_sid.filter(|s| !s.is_empty());
    let twilio = match (&sid, &token) {
        (Some(sid), Some(token)) => Some(TwilioClient::new(
            &args.twilio_api_url,
            sid,
            token,
            Duration::from_secs(10),
        )?),
        _ => None,
    };
    let auth = match (args.twilio_signatures, &token) {
        (Toggle::Off, _) => TwilioAuth::Open,
        (Toggle::On | Toggle::Auto, Some(_)) => TwilioAuth::Signed,
        (Toggle::On, None) => {
            anyhow::bail!("CALLPIPE_TWILIO_SIGNATURES=on needs TWILIO_AUTH_TOKEN")
        }
        (Toggle::Auto, None) => TwilioAuth::Refused,
    };
    let settings = TwilioSettings {
        account_sid: sid,
        auth_token: token,
        phone_number: args.twilio_phone_number.filter(|p| !p.is_empty()),
        public_url: args.twilio_websocket_url.filter(|u| !u.is_empty()),
        auth,
        stream_secret: args.stream_secret.filter(|s| !s.is_empty()),
        stream_timeouts: crate::calls::media_stream::StreamTimeouts {
            start: Duration::from_millis(args.stream_start_timeout_ms.max(1)),
            idle: Duration::from_millis(args.stream_idle_timeout_ms.max(1)),
        },
        stream_mode: Some(match args.stream_mode {
            Mode::Connect => StreamMode::Connect,
            Mode::Start => StreamMode::Start,
        }),
    };
    if twilio.is_none() {
        tracing::warn!(
            "Twilio not configured: call endpoints answer 503; media streams and replay still work"
        );
    }
    match auth {
        TwilioAuth::Signed => {}
        TwilioAuth::Refused => tracing::warn!(
            "TWILIO_AUTH_TOKEN is not set: Twilio's routes (/twilio/voice, /twilio/status, \
             /twilio/media-stream) refuse every request; set it, or CALLPIPE_TWILIO_SIGNATURES=off \
             to accept unsigned requests on a private network"
        ),
        TwilioAuth::Open => tracing::warn!(
            "CALLPIPE_TWILIO_SIGNATURES=off: Twilio's routes accept UNSIGNED requests; anyone who \
             can reach this server can start media streams and post call events"
        ),
    }
    let (api_token, token_in_file) = api_token(args.api_token.as_deref(), data_dir)?;
    if api_token.is_none() {
        tracing::warn!(
            "CALLPIPE_API_TOKEN=off: the API and dashboard are open to anyone who can reach them"
        );
    }
    let names: Vec<&str> = pipeline.stages.iter().map(|s| &*s.name).collect();
    let reloader = Arc::new(crate::pipeline::reload::Reloader::new(
        runtime.clone(),
        args.pipeline.clone(),
        data_dir.to_path_buf(),
        Some(store.clone()),
        args.max_calls,
    ));
    // What the host can hold with this pipeline, measured, not discovered
    // by the call that fails.
    let capacity = crate::pipeline::capacity::measure(&pipeline, args.max_calls, None).await;
    anyhow::ensure!(
        capacity.calls > 0,
        "this host cannot hold a single call of the pipeline: {}",
        capacity.describe()
    );
    if capacity.calls < args.max_calls {
        tracing::warn!(
            "--max-calls {} is more than this host can hold: {}; serving at most {} calls",
            args.max_calls,
            capacity.describe(),
            capacity.calls
        );
    } else {
        tracing::info!(
            mappings_per_call = capacity.mappings_per_call,
            "capacity: {}",
            capacity.describe()
        );
    }
    let state = AppState::new(
        pipeline.clone(),
        settings,
        twilio,
        capacity,
        sessions.clone(),
        api_token.clone(),
        Some(reloader.clone()),
    )
    .with_identity(identity)
    .with_cluster(cluster.health.clone(), cluster_key);
    let watcher = (args.watch_ms > 0)
        .then(|| reloader.watch(state.slot.clone(), Duration::from_millis(args.watch_ms)));
    // Chat sessions nobody writes to any more are ended; ended sessions
    // leave memory after the grace period (the store answers for them).
    let reaper = {
        let state = state.clone();
        let grace = Duration::from_secs(args.session_grace_s);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(
                Duration::from_secs(5).min(grace.max(Duration::from_secs(1))),
            );
            let mut chats_checked = std::time::Instant::now();
            loop {
                every.tick().await;
                if chats_checked.elapsed() >= Duration::from_secs(60) {
                    chats_checked = std::time::Instant::now();
                    state
                        .chats
                        .end_idle(crate::calls::chat::IDLE, &state.sessions)
                        .await;
                }
                let gone = state.sessions.evict_ended(grace);
                if gone > 0 {
                    tracing::debug!(gone, "ended sessions left memory");
                }
            }
        })
    };
    let app = web::router(state.clone());
    // The first line a supervisor or test waits for.
    println!(
        "callpipe listening on http://{addr} (pipeline `{}` {}: {})",
        pipeline.name,
        pipeline.version,
        names.join(" -> ")
    );
    if api_token.is_some() {
        // The links, never the token itself: logs travel further than the
        // data dir. Open a page once with ?token=TOKEN; a cookie does the rest.
        let host = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        let from = if token_in_file {
            format!("the token is in {}", data_dir.join(TOKEN_FILE).display())
        } else {
            "the token is CALLPIPE_API_TOKEN".to_string()
        };
        tracing::info!(
            "dashboard: http://{host}/demo/technician?token=TOKEN, operations: http://{host}/?token=TOKEN ({from})"
        );
    }
    // One budget for the whole stop: the drain leaves the rest of it to
    // ending chats and storing what is queued.
    let budget = Duration::from_secs(args.shutdown_s.max(1));
    let drain = Duration::from_secs(args.drain_s).min(budget.saturating_sub(AFTER_DRAIN));
    let stopping: Arc<std::sync::OnceLock<tokio::time::Instant>> = Arc::default();
    axum::serve(listener, app)
        .with_graceful_shutdown({
            let state = state.clone();
            let stopping = stopping.clone();
            async move {
                shutdown().await;
                let _ = stopping.set(tokio::time::Instant::now());
                drain_calls(&state, drain).await;
            }
        })
        .await
        .context("server failed")?;
    let deadline = *stopping.get_or_init(tokio::time::Instant::now) + budget;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    reaper.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    // Half of what is left at most for the chats' last work (summaries),
    // so the store still gets its writes.
    if tokio::time::timeout(left() / 2, end_what_is_left(&state))
        .await
        .is_err()
    {
        tracing::warn!("ending the chat sessions took too long; storing what is queued");
    }
    // What calls produced up to the end is queued for the store: flush it
    // before closing the pool.
    let flush = left().max(Duration::from_secs(1));
    if !sessions.flush(flush).await {
        tracing::error!(
            "the store did not take every queued write within the stop's budget \
             ({} s, CALLPIPE_SHUTDOWN_S); the rest is lost",
            budget.as_secs()
        );
    }
    cluster.leave().await;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM: this host takes nothing new (`/ready` answers 503, streams and
/// calls are refused, event streams end so their clients reconnect
/// elsewhere) and gives the live calls up to `limit` to finish.
async fn drain_calls(state: &AppState, limit: Duration) {
    use std::sync::atomic::Ordering::Acquire;
    let _ = state.draining.send(true);
    let live = state.active_streams.load(Acquire);
    if live == 0 {
        return;
    }
    tracing::info!(
        live,
        "draining: new calls go elsewhere; waiting up to {} s for the live ones",
        limit.as_secs()
    );
    let until = tokio::time::Instant::now() + limit;
    while state.active_streams.load(Acquire) > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = state.active_streams.load(Acquire);
    if left > 0 {
        tracing::warn!(left, "drain time is up: the calls still live are cut");
    }
}

/// After the drain: chat sessions end, and calls still streaming are
/// recorded as ended by this host (interrupted), not left for another
/// host to find once the lease expires.
async fn end_what_is_left(state: &AppState) {
    let cut: Vec<String> = state
        .sessions
        .map_all(|s| (s.streaming && !s.is_over()).then(|| s.session_id.clone()));
    for id in &cut {
        state.sessions.set_streaming(id, false);
        state.sessions.set_status(id, "interrupted");
    }
    state.chats.end_all(&state.sessions).await;
}

/// What a stop keeps after the drain for ending chats and storing what is
/// queued.
const AFTER_DRAIN: Duration = Duration::from_secs(10);

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
