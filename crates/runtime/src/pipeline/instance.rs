//! One stage of one call: its own `Store` (memory limit, per-event deadline)
//! and instance. A fault (trap, deadline, limit) replaces the instance; the
//! call goes on.

use super::engine::Runtime;
use super::loaded::LoadedStage;
use super::state::{StageContext, StageState};
use crate::bindings::types::{CallInfo, Descriptor, Event, StageError};
use crate::bindings::{FullStage, FullStagePre};
use crate::capabilities::call_language::CallLanguage;
use crate::capabilities::provenance::ModelReplies;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};

/// Instantiation and `init` get at least this long, whatever the event deadline.
const MIN_START_DEADLINE: Duration = Duration::from_secs(2);
/// After a failed replacement, the stage is tried again no sooner than
/// this: a host that cannot instantiate now (out of slots or memory) is
/// not asked again on every 20 ms frame.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("deadline of {ms} ms exceeded")]
pub struct DeadlineExceeded {
    pub ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    #[error("init rejected the configuration: {0}")]
    Init(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The stage reported an error; its instance is fine.
    #[error("stage error: {0}")]
    Stage(String),
    /// The instance trapped, overran its deadline or hit a limit; it was replaced.
    #[error("{0}")]
    Fault(String),
    /// No instance: the last replacement failed and the next try is not
    /// due yet. The event was not handled.
    #[error("stage unavailable: {0}")]
    Unavailable(String),
}

pub fn stage_error_text(e: &StageError) -> String {
    match e {
        StageError::InvalidConfig(m) => format!("invalid config: {m}"),
        StageError::InvalidEvent(m) => format!("invalid event: {m}"),
        StageError::Capability(m) => format!("capability: {m}"),
        StageError::Internal(m) => format!("internal: {m}"),
    }
}

struct Live {
    store: Store<StageState>,
    bindings: FullStage,
}

/// Stage instances alive in this process (capacity's measure subtracts
/// what live calls hold).
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Stage instances alive in this process, across calls and pipelines.
pub fn live_instances() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

pub struct StageInstance {
    runtime: Arc<Runtime>,
    stage: Arc<LoadedStage>,
    context: StageContext,
    call: CallInfo,
    live: Option<Live>,
    /// After a failed replacement: why, and when to try again.
    down: Option<(String, Instant)>,
    /// The call's language as the last instance knew it: a replacement
    /// starts from it instead of detecting the call's language again.
    language: CallLanguage,
}

impl StageInstance {
    pub async fn start(
        runtime: Arc<Runtime>,
        stage: Arc<LoadedStage>,
        call_id: Arc<str>,
        call: CallInfo,
    ) -> Result<Self, InstanceError> {
        let context = StageContext {
            call_id,
            stage: stage.name.clone(),
            language: call.language.as_str().into(),
        };
        let live = instantiate(&runtime, &stage.pre, &stage, &context, &call).await?;
        LIVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            runtime,
            stage,
            context,
            call,
            live: Some(live),
            down: None,
            language: CallLanguage::default(),
        })
    }

    pub fn context(&self) -> &StageContext {
        &self.context
    }

    /// What the model answered while the last event was handled.
    pub fn model_replies(&self) -> Option<&ModelReplies> {
        self.live
            .as_ref()
            .map(|l| &l.store.data().capabilities.model_replies)
    }

    pub async fn handle(&mut self, event: &Event) -> Result<Vec<Event>, HandleError> {
        if self.live.is_none() {
            // A previous replacement failed: try again once it is due.
            if let Some((why, at)) = &self.down
                && Instant::now() < *at
            {
                return Err(HandleError::Unavailable(why.clone()));
            }
            self.restart().await?;
        }
        let ticks = ticks(
            &self.runtime,
            Duration::from_millis(self.stage.limits.deadline_ms),
        );
        let live = self
            .live
            .as_mut()
            .ok_or_else(|| HandleError::Unavailable("no instance".into()))?;
        live.store.data_mut().ticks_left = ticks;
        live.store.data_mut().capabilities.model_replies.clear();
        live.store.set_epoch_deadline(1);
        let result = live
            .bindings
            .callpipe_stage_stage()
            .call_handle(&mut live.store, event)
            .await;
        match result {
            Ok(Ok(events)) => Ok(events),
            Ok(Err(e)) => Err(HandleError::Stage(stage_error_text(&e))),
            Err(error) => {
                let mut message = describe_fault(&error, &self.stage);
                let tail = live.store.data().stderr.tail();
                if !tail.is_empty() {
                    message.push_str(&format!("; guest output: {tail}"));
                }
                // A trapped instance is poisoned: drop it and start afresh
                // (what the host keeps for the call goes on).
                self.language = live.store.data().capabilities.language.clone();
                self.live = None;
                if let Err(e) = self.restart().await {
                    message.push_str(&format!("; {e}"));
                }
                Err(HandleError::Fault(message))
            }
        }
    }

    async fn restart(&mut self) -> Result<(), HandleError> {
        match instantiate(
            &self.runtime,
            &self.stage.pre,
            &self.stage,
            &self.context,
            &self.call,
        )
        .await
        {
            Ok(mut live) => {
                live.store.data_mut().capabilities.language = self.language.clone();
                self.live = Some(live);
                self.down = None;
                Ok(())
            }
            Err(e) => {
                let why = format!("restart failed: {e}");
                self.down = Some((why.clone(), Instant::now() + RESTART_BACKOFF));
                Err(HandleError::Fault(why))
            }
        }
    }
}

impl Drop for StageInstance {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn describe_fault(error: &wasmtime::Error, stage: &LoadedStage) -> String {
    if let Some(d) = error.downcast_ref::<DeadlineExceeded>() {
        return format!("per-event deadline of {} ms exceeded", d.ms);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::UnreachableCodeReached) => "trapped: unreachable (the stage panicked)".into(),
        Some(Trap::AllocationTooLarge) => {
            format!("memory limit of {} MiB reached", stage.limits.memory_mib)
        }
        Some(trap) => format!("trapped: {trap}"),
        None => {
            let text = format!("{error:#}");
            if text.contains("grow") && text.contains("memory") {
                format!(
                    "memory limit of {} MiB reached ({text})",
                    stage.limits.memory_mib
                )
            } else {
                format!("failed: {text}")
            }
        }
    }
}

/// Epoch ticks in `d`, plus the one the first callback charges.
fn ticks(runtime: &Runtime, d: Duration) -> u64 {
    let tick = runtime.config().epoch_tick.as_nanos().max(1);
    (d.as_nanos() / tick) as u64 + 1
}

/// A store for one instance of `stage`: its memory limit, and the epoch
/// callback that yields to other calls and traps once the deadline passes.
///
/// The deadline is charged in epoch ticks during which the guest itself
/// ran: the time a stage computes. Waiting for a capability is bounded by
/// that capability's own timeout, and waiting for a thread is not the
/// stage's doing. Charging wall time made a busy host fault healthy stages
/// (measured: a 50 ms codec event "overran" whenever its task waited 50 ms
/// for a core), and each fault replaced an instance, adding work to a host
/// already behind. A loop is caught all the same; a resumed guest may be
/// charged a tick it did not run, which errs towards trapping early.
fn new_store(runtime: &Runtime, stage: &LoadedStage, context: &StageContext) -> Store<StageState> {
    let limits = StoreLimitsBuilder::new()
        .memory_size(stage.limits.memory_mib as usize * 1024 * 1024)
        .trap_on_grow_failure(true)
        .build();
    let mut store = Store::new(
        runtime.engine(),
        StageState::new(context.clone(), limits, stage.capabilities.clone()),
    );
    store.limiter(|s| &mut s.limits);
    let deadline_ms = stage.limits.deadline_ms;
    let start = MIN_START_DEADLINE.max(Duration::from_millis(deadline_ms));
    store.data_mut().ticks_left = ticks(runtime, start);
    // Called on every epoch tick while the guest runs: yield so other calls
    // keep their thread, and trap once the event's ticks are spent. The
    // budget must be set before instantiating, or the start function traps
    // at once.
    store.epoch_deadline_callback(move |mut ctx| {
        let state = ctx.data_mut();
        state.ticks_left = state.ticks_left.saturating_sub(1);
        if state.ticks_left == 0 {
            Err(wasmtime::Error::new(DeadlineExceeded { ms: deadline_ms }))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);
    store
}

async fn init(
    store: &mut Store<StageState>,
    bindings: &FullStage,
    stage: &LoadedStage,
    call: &CallInfo,
) -> Result<(), InstanceError> {
    bindings
        .callpipe_stage_stage()
        .call_init(store, &stage.config_json, call)
        .await
        .map_err(|e| InstanceError::Instantiate(format!("init trapped: {e:#}")))?
        .map_err(|e| InstanceError::Init(stage_error_text(&e)))
}

async fn instantiate(
    runtime: &Runtime,
    pre: &FullStagePre<StageState>,
    stage: &LoadedStage,
    context: &StageContext,
    call: &CallInfo,
) -> Result<Live, InstanceError> {
    let mut store = new_store(runtime, stage, context);
    let bindings = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| InstanceError::Instantiate(format!("{e:#}")))?;
    init(&mut store, &bindings, stage, call).await?;
    Ok(Live { store, bindings })
}

/// Loads the stage once as a call would (same store, limits and deadline):
/// reads its descriptor, then checks that `init` accepts its configured
/// settings, so a bad config fails at load, not mid-call.
pub async fn probe(
    runtime: &Runtime,
    stage: &LoadedStage,
    call: &CallInfo,
) -> Result<Descriptor, InstanceError> {
    let context = StageContext {
        call_id: "check".into(),
        stage: stage.name.clone(),
        language: call.language.as_str().into(),
    };
    let mut store = new_store(runtime, stage, &context);
    let bindings = stage
        .pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| InstanceError::Instantiate(format!("{e:#}")))?;
    let descriptor = bindings
        .callpipe_stage_stage()
        .call_describe(&mut store)
        .await
        .map_err(|e| InstanceError::Instantiate(format!("describe trapped: {e:#}")))?;
    init(&mut store, &bindings, stage, call).await?;
    Ok(descriptor)
}
