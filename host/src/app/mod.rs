//! The one place the server is assembled: `App::build` opens the store,
//! joins the hosts sharing it, measures capacity and wires the state, the
//! router and the background tasks from a [`Config`]; `App::serve` runs
//! them until a stop signal and stops within the budget. `callpipe serve`
//! is these two calls after loading the pipeline.

mod config;
mod reaper;
pub mod stop;
pub mod token;

pub use config::{Config, Mode, Toggle};

use crate::pipeline::{LoadedPipeline, Runtime};
use crate::web::{self, AppState, TwilioAuth};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A built server: what it serves, on which socket, and what runs beside.
pub struct App {
    pub state: AppState,
    pub router: axum::Router,
    listener: tokio::net::TcpListener,
    cluster: crate::cluster::Cluster,
    store: Arc<crate::store::Store>,
    tasks: Vec<JoinHandle<()>>,
    budget: Duration,
    drain: Duration,
}

impl App {
    /// Everything but serving: the store, this host among the others, the
    /// Twilio and API guards, capacity for `pipeline`, the state and routes.
    pub async fn build(
        data_dir: &Path,
        config: Config,
        runtime: Arc<Runtime>,
        pipeline: Arc<LoadedPipeline>,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<App> {
        crate::pipeline::reload::seed_knowledge(&pipeline).await?;
        let addr = listener.local_addr()?;
        let identity = crate::cluster::Identity::new(
            config.host_id.as_deref(),
            config.advertise_url.as_deref(),
            config.listen,
            addr,
        );
        let cluster_key = crate::cluster::forward::ClusterKey::new(
            config.cluster_secret.as_deref().unwrap_or_default(),
        )
        .map_err(anyhow::Error::msg)?;
        let store =
            Arc::new(crate::store::Store::open(data_dir, config.database_url.as_deref()).await?);
        if store.backend() == "postgres" && cluster_key.is_none() {
            tracing::warn!(
                "CALLPIPE_CLUSTER_SECRET is unset: if other hosts share this database, requests \
                 about a call one of them runs (chat, mute, end) are refused here instead of \
                 handed over"
            );
        }
        store.set_host(&identity.id);
        tracing::info!(host = %identity.id, "database: {} ({})", store.display, store.backend());
        record(&store, &pipeline).await?;
        let sessions = Arc::new(crate::sessions::Sessions::with_store(store.clone()));
        // The lease first: a second process given this host's id must not
        // touch its calls.
        let cluster = crate::cluster::Cluster::join(
            identity.clone(),
            store.clone(),
            sessions.clone(),
            config.timing(),
        )
        .await
        .context("cannot join the hosts sharing the database")?;
        let cut = store.interrupt_unfinished(&identity.id).await?;
        if !cut.is_empty() {
            tracing::warn!(
                "{} call(s) of this host were cut by its last stop and are marked interrupted",
                cut.len()
            );
        }
        record_stage_failures(&sessions);
        let (settings, twilio) = config.twilio()?;
        warn_about_twilio(settings.auth, twilio.is_some());
        let (api_token, token_in_file) = token::api_token(config.api_token.as_deref(), data_dir)?;
        if api_token.is_none() {
            tracing::warn!(
                "CALLPIPE_API_TOKEN=off: the API and dashboard are open to anyone who can reach them"
            );
        }
        let on_loaded: crate::pipeline::reload::OnLoaded = {
            let store = store.clone();
            Arc::new(move |p| {
                let store = store.clone();
                Box::pin(async move { record(&store, &p).await.map_err(|e| e.to_string()) })
            })
        };
        let reloader = Arc::new(crate::pipeline::reload::Reloader::new(
            runtime,
            config.pipeline.clone(),
            data_dir.to_path_buf(),
            Some(on_loaded),
            config.max_calls,
        ));
        let capacity = measure_capacity(&pipeline, config.max_calls).await?;
        let state = AppState::new(crate::web::Parts {
            pipeline: pipeline.clone(),
            capacity,
            sessions,
            twilio_settings: settings,
            twilio,
            api_token: api_token.clone(),
            reloader: Some(reloader.clone()),
            identity: Some(identity),
            lease: Some(cluster.health.clone()),
            cluster_key,
        });
        let mut tasks = vec![reaper::spawn(
            state.clone(),
            Duration::from_secs(config.session_grace_s),
        )];
        if config.watch_ms > 0 {
            let every = Duration::from_millis(config.watch_ms);
            tasks.push(reloader.watch(state.slot.clone(), every));
        }
        let router = web::router(state.clone());
        announce(
            &pipeline,
            addr,
            api_token.is_some(),
            token_in_file,
            data_dir,
        );
        let (budget, drain) = config.stop_budget();
        Ok(App {
            state,
            router,
            listener,
            cluster,
            store,
            tasks,
            budget,
            drain,
        })
    }

    /// Serves until `stop` resolves, then drains the live calls and stops
    /// within the budget: chats end, what is queued is stored, the lease
    /// is given back.
    pub async fn serve(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            state,
            router,
            listener,
            cluster,
            store,
            tasks,
            budget,
            drain,
        } = self;
        let stopping: Arc<std::sync::OnceLock<tokio::time::Instant>> = Arc::default();
        axum::serve(listener, router)
            .with_graceful_shutdown({
                let (state, stopping) = (state.clone(), stopping.clone());
                async move {
                    stop.await;
                    let _ = stopping.set(tokio::time::Instant::now());
                    stop::drain_calls(&state, drain).await;
                }
            })
            .await
            .context("server failed")?;
        let deadline = *stopping.get_or_init(tokio::time::Instant::now) + budget;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        for task in tasks {
            task.abort();
        }
        // Half of what is left at most for the chats' last work (summaries),
        // so the store still gets its writes.
        if tokio::time::timeout(left() / 2, stop::end_what_is_left(&state))
            .await
            .is_err()
        {
            tracing::warn!("ending the chat sessions took too long; storing what is queued");
        }
        // What calls produced up to the end is queued for the store: flush
        // it before closing the pool, keeping the last steps their time.
        if !state
            .sessions
            .flush(
                left()
                    .saturating_sub(LAST_STEPS)
                    .max(Duration::from_secs(1)),
            )
            .await
        {
            tracing::error!(
                "the store did not take every queued write within the stop's budget \
                 ({} s, CALLPIPE_SHUTDOWN_S); the rest is lost",
                budget.as_secs()
            );
        }
        // Giving up the lease and closing the pool wait on the database:
        // bounded too, so the whole stop stays inside the budget.
        let last = async {
            cluster.leave().await;
            store.close().await;
        };
        if tokio::time::timeout(left().max(Duration::from_millis(500)), last)
            .await
            .is_err()
        {
            tracing::warn!("the database did not see this host leave; its lease will expire");
        }
        Ok(())
    }
}

/// What a stop keeps after the queued writes: leaving the cluster, closing
/// the pool, and the runtime's own exit (`cli::main`).
const LAST_STEPS: Duration = Duration::from_secs(2);

/// Files a loaded pipeline in the store: the text it was loaded from, which
/// its version hashes (the file may have changed since).
async fn record(
    store: &crate::store::Store,
    p: &LoadedPipeline,
) -> Result<(), crate::store::StoreError> {
    store
        .record_pipeline(
            &p.version,
            &p.name,
            &p.path.display().to_string(),
            &p.source,
        )
        .await
}

/// Stage failures go to the store too (the ops page lists them).
fn record_stage_failures(sessions: &Arc<crate::sessions::Sessions>) {
    let sessions = Arc::downgrade(sessions);
    crate::metrics::STAGE_FAILURES.set_sink(move |f| {
        if let Some(s) = sessions.upgrade() {
            s.record_stage_error(f);
        }
    });
}

fn warn_about_twilio(auth: TwilioAuth, rest: bool) {
    if !rest {
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
}

/// What the host can hold with this pipeline, measured, not discovered by
/// the call that fails.
async fn measure_capacity(
    pipeline: &Arc<LoadedPipeline>,
    max_calls: usize,
) -> anyhow::Result<crate::pipeline::capacity::Capacity> {
    let capacity = crate::pipeline::capacity::measure(pipeline, max_calls, None).await;
    anyhow::ensure!(
        capacity.calls > 0,
        "this host cannot hold a single call of the pipeline: {}",
        capacity.describe()
    );
    if capacity.calls < max_calls {
        tracing::warn!(
            "--max-calls {max_calls} is more than this host can hold: {}; serving at most {} calls",
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
    Ok(capacity)
}

/// The first line a supervisor or test waits for, and where the pages are.
fn announce(
    pipeline: &LoadedPipeline,
    addr: SocketAddr,
    token: bool,
    token_in_file: bool,
    data_dir: &Path,
) {
    let names: Vec<&str> = pipeline.stages.iter().map(|s| &*s.name).collect();
    println!(
        "callpipe listening on http://{addr} (pipeline `{}` {}: {})",
        pipeline.name,
        pipeline.version,
        names.join(" -> ")
    );
    if token {
        // The links, never the token itself: logs travel further than the
        // data dir. Open a page once with ?token=TOKEN; a cookie does the rest.
        let host = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        let from = if token_in_file {
            format!(
                "the token is in {}",
                data_dir.join(token::TOKEN_FILE).display()
            )
        } else {
            "the token is CALLPIPE_API_TOKEN".to_string()
        };
        tracing::info!(
            "dashboard: http://{host}/demo/technician?token=TOKEN, operations: http://{host}/?token=TOKEN ({from})"
        );
    }
}

/// The runtime sized for `max_calls`: the pool's slots are memory mappings
/// from the start, so sized for more calls than fit under
/// vm.max_map_count it takes what calls need.
pub fn runtime_config(data_dir: &Path, max_calls: usize) -> crate::pipeline::RuntimeConfig {
    let stages_per_call = 8u32; // headroom for pipelines that grow
    let pool_calls = crate::pipeline::capacity::pool_calls(
        max_calls,
        stages_per_call.into(),
        crate::pipeline::capacity::max_map_count(),
    );
    let mut config = crate::pipeline::RuntimeConfig::new(data_dir);
    config.max_instances = config
        .max_instances
        .max((pool_calls as u32 + 4) * stages_per_call);
    config
}
