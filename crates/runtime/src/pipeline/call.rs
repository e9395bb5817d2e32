//! One call through a pipeline: a task per stage, joined by bounded channels,
//! so a slow stage (Whisper) never stalls audio intake.

use super::event::kind_of;
use super::instance::{HandleError, StageInstance};
use super::loader::LoadedPipeline;
use super::stats::{StageStats, StatsSnapshot};
use crate::bindings::types::{CallInfo, Custom, Event, EventKind, Track};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// What comes out of the last stage, in order.
pub type CallOutput = mpsc::Receiver<Event>;

/// An event on its way between stages, with when it entered the call.
struct Item {
    event: Event,
    arrived: Instant,
}

fn is_audio(kind: EventKind) -> bool {
    matches!(kind, EventKind::EncodedAudio | EventKind::Audio)
}

/// Where a stage sends what it produces: the next stage, or out of the call.
enum Next {
    Stage(mpsc::Sender<Item>),
    Output(mpsc::Sender<Event>),
}

impl Next {
    async fn send(&self, item: Item) -> bool {
        match self {
            Next::Stage(tx) => tx.send(item).await.is_ok(),
            Next::Output(tx) => {
                if is_audio(kind_of(&item.event)) {
                    crate::metrics::AUDIO
                        .frame_lag
                        .record(item.arrived.elapsed());
                }
                tx.send(item.event).await.is_ok()
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("stage `{stage}` cannot start: {message}")]
    Start { stage: String, message: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The first stage's queue is full; the event was dropped.
    #[error("the pipeline is saturated; event dropped")]
    Full,
    /// The call has ended.
    #[error("the call has ended")]
    Closed,
}

/// Sends events into a call's first stage; see [`Call::injector`].
#[derive(Clone)]
pub struct Injector(mpsc::WeakSender<Item>);

impl Injector {
    /// Waits for room, like [`Call::send`].
    pub async fn send(&self, event: Event) -> Result<(), SendError> {
        let tx = self.0.upgrade().ok_or(SendError::Closed)?;
        tx.send(Item {
            event,
            arrived: Instant::now(),
        })
        .await
        .map_err(|_| SendError::Closed)
    }
}

pub struct Call {
    pub id: Arc<str>,
    pub info: CallInfo,
    pub pipeline: Arc<LoadedPipeline>,
    input: Option<mpsc::Sender<Item>>,
    tasks: Vec<JoinHandle<()>>,
    stats: Arc<[StageStats]>,
    dropped: AtomicU64,
    /// Stream time of the next `callpipe.tick` (u64::MAX: no ticks).
    next_tick_ms: AtomicU64,
}

/// Control events keep flowing even when a stage fails on them, so every
/// stage still learns that the call ended.
fn is_control(kind: EventKind) -> bool {
    matches!(kind, EventKind::CallStarted | EventKind::CallEnded)
}

impl Call {
    /// Instantiates every stage for this call and starts their tasks; sends
    /// `call-started` first.
    pub async fn start(
        pipeline: Arc<LoadedPipeline>,
        info: CallInfo,
    ) -> Result<(Call, CallOutput), CallError> {
        Self::start_from(pipeline, info, 0).await
    }

    /// Like `start`, but the call enters the pipeline at stage `first`: the
    /// chat path starts where transcripts are handled, so the audio stages
    /// are never instantiated for it.
    pub async fn start_from(
        pipeline: Arc<LoadedPipeline>,
        info: CallInfo,
        first: usize,
    ) -> Result<(Call, CallOutput), CallError> {
        let first = first.min(pipeline.stages.len());
        let stages = &pipeline.stages[first..];
        let id: Arc<str> = if info.call_sid.is_empty() {
            info.session_id.as_str().into()
        } else {
            info.call_sid.as_str().into()
        };
        let stats: Arc<[StageStats]> = stages.iter().map(|_| StageStats::default()).collect();
        let mut instances = Vec::with_capacity(stages.len());
        for stage in stages {
            let inst = StageInstance::start(
                pipeline.runtime.clone(),
                stage.clone(),
                id.clone(),
                info.clone(),
            )
            .await
            .map_err(|e| CallError::Start {
                stage: stage.name.to_string(),
                message: e.to_string(),
            })?;
            instances.push(inst);
        }
        let (input, first_rx) = mpsc::channel::<Item>(pipeline.queue);
        let (output_tx, output) = mpsc::channel::<Event>(pipeline.queue);
        let count = instances.len();
        let mut rx = Some(first_rx);
        let session_id: Arc<str> = info.session_id.as_str().into();
        let mut tasks = Vec::with_capacity(count);
        for (index, inst) in instances.into_iter().enumerate() {
            let Some(stage_rx) = rx.take() else { break };
            let next = if index + 1 == count {
                Next::Output(output_tx.clone())
            } else {
                let (tx, next_rx) = mpsc::channel(pipeline.queue);
                rx = Some(next_rx);
                Next::Stage(tx)
            };
            let stage = stages[index].clone();
            // Debug level: entered on every poll, so it costs nothing unless
            // debug logging is on (log lines carry call and stage anyway).
            let span = tracing::debug_span!("stage", call = %id, stage = %stage.name);
            let counters = Counters {
                call: stats.clone(),
                index,
                stage: crate::metrics::stage(&stage.name),
                session_id: session_id.clone(),
            };
            tasks.push(tokio::spawn(
                run_stage(inst, stage.on, stage_rx, next, counters).instrument(span),
            ));
        }
        drop(output_tx);
        let pipeline_ticks = pipeline.tick_ms.is_some();
        let call = Call {
            id,
            info: info.clone(),
            pipeline,
            input: Some(input),
            tasks,
            stats,
            dropped: AtomicU64::new(0),
            next_tick_ms: AtomicU64::new(if pipeline_ticks { 0 } else { u64::MAX }),
        };
        call.send(Event::CallStarted(info)).await.ok();
        Ok((call, output))
    }

    /// For live audio: never waits. A full queue drops the event and counts it.
    pub fn try_send(&self, event: Event) -> Result<(), SendError> {
        let input = self.input.as_ref().ok_or(SendError::Closed)?;
        let tick = self.tick_due(&event);
        input
            .try_send(Item {
                event,
                arrived: Instant::now(),
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.dropped.fetch_add(1, Relaxed);
                    SendError::Full
                }
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            })?;
        if let Some(tick) = tick {
            // Ticks are advisory: a full queue just skips one.
            let _ = input.try_send(Item {
                event: tick,
                arrived: Instant::now(),
            });
        }
        Ok(())
    }

    /// For control events and offline replay: waits for room.
    pub async fn send(&self, event: Event) -> Result<(), SendError> {
        let input = self.input.as_ref().ok_or(SendError::Closed)?;
        let tick = self.tick_due(&event);
        input
            .send(Item {
                event,
                arrived: Instant::now(),
            })
            .await
            .map_err(|_| SendError::Closed)?;
        if let Some(tick) = tick {
            input
                .send(Item {
                    event: tick,
                    arrived: Instant::now(),
                })
                .await
                .map_err(|_| SendError::Closed)?;
        }
        Ok(())
    }

    /// The host's clock for stages that must notice time passing without
    /// events of their own (a held fragment, a timeout): every `tick_ms` of
    /// inbound stream time, a `custom` event named `callpipe.tick`.
    fn tick_due(&self, event: &Event) -> Option<Event> {
        let now = match event {
            Event::EncodedAudio(a) if a.track == Track::Inbound => a.timestamp_ms,
            Event::Audio(a) if a.track == Track::Inbound => a.timestamp_ms,
            _ => return None,
        };
        let next = self.next_tick_ms.load(Relaxed);
        if now < next || next == u64::MAX {
            return None;
        }
        let every = self.pipeline.tick_ms.unwrap_or(u64::MAX);
        self.next_tick_ms.store(now.saturating_add(every), Relaxed);
        Some(Event::Custom(Custom {
            name: super::event::TICK.into(),
            json: format!("{{\"stream_ms\":{now}}}"),
        }))
    }

    /// A handle that sends into this call from elsewhere (a chat message
    /// for a live phone call) without keeping the call open: once the call
    /// finishes, sending through it fails with `Closed`.
    pub fn injector(&self) -> Option<Injector> {
        self.input.as_ref().map(|tx| Injector(tx.downgrade()))
    }

    /// Events dropped at intake because the pipeline was saturated.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    pub fn stats(&self) -> Vec<StatsSnapshot> {
        self.stats.iter().map(StageStats::snapshot).collect()
    }

    /// Sends `call-ended`, lets every stage drain and returns the final
    /// counters. The output receiver must be drained meanwhile.
    pub async fn finish(mut self) -> Vec<StatsSnapshot> {
        self.send(Event::CallEnded(self.info.clone())).await.ok();
        self.input = None;
        for task in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.await {
                tracing::error!(call = %self.id, "stage task ended abnormally: {e}");
            }
        }
        self.stats()
    }
}

/// Failures of one stage in one call reported one by one; after that, one
/// in a hundred.
const REPORTED_FAILURES: u64 = 10;

/// Where a stage task counts: this call's numbers and the stage's across
/// calls.
struct Counters {
    call: Arc<[StageStats]>,
    index: usize,
    stage: Arc<crate::metrics::StageMetrics>,
    /// Failures are filed under the session (the dashboard's id).
    session_id: Arc<str>,
}

async fn run_stage(
    mut inst: StageInstance,
    on: super::event::KindSet,
    mut rx: mpsc::Receiver<Item>,
    next: Next,
    counters: Counters,
) {
    let stats = &counters.call[counters.index];
    let totals = &*counters.stage;
    let mut failures = 0u64;
    while let Some(Item { event, arrived }) = rx.recv().await {
        let kind = kind_of(&event);
        if !on.contains(kind) {
            stats.skipped.fetch_add(1, Relaxed);
            if !next.send(Item { event, arrived }).await {
                break;
            }
            continue;
        }
        let started = Instant::now();
        let result = inst.handle(&event).await;
        let busy = started.elapsed();
        stats.add_busy(busy);
        totals.latency.record(busy);
        let outputs = match result {
            Ok(outputs) => {
                stats.handled.fetch_add(1, Relaxed);
                stats.emitted.fetch_add(outputs.len() as u64, Relaxed);
                totals.handled.fetch_add(1, Relaxed);
                totals.emitted.fetch_add(outputs.len() as u64, Relaxed);
                outputs
            }
            Err(error) => {
                stats.failed.fetch_add(1, Relaxed);
                totals.failed.fetch_add(1, Relaxed);
                let ctx = inst.context();
                match &error {
                    HandleError::Stage(_) => tracing::warn!(
                        call = %ctx.call_id,
                        stage = %ctx.stage,
                        kind = super::event::kind_name(kind),
                        "event failed: {error}"
                    ),
                    HandleError::Fault(_) => {
                        stats.restarts.fetch_add(1, Relaxed);
                        totals.restarts.fetch_add(1, Relaxed);
                        tracing::error!(
                            call = %ctx.call_id,
                            stage = %ctx.stage,
                            kind = super::event::kind_name(kind),
                            "stage instance replaced after a fault: {error}"
                        )
                    }
                    // Its failed replacement was logged as a fault; each
                    // event it misses until the next try is only counted.
                    HandleError::Unavailable(_) => {}
                }
                // A stage failing on every frame must not flood the store:
                // the first few of a call are kept, then one in a hundred.
                failures += 1;
                if failures <= REPORTED_FAILURES || failures.is_multiple_of(100) {
                    let message = if failures > REPORTED_FAILURES {
                        format!("{error} (failure {failures} of this call)")
                    } else {
                        error.to_string()
                    };
                    crate::metrics::STAGE_FAILURES.report(crate::metrics::StageFailure {
                        at: crate::clock::now_epoch(),
                        session_id: counters.session_id.to_string(),
                        stage: ctx.stage.to_string(),
                        kind: super::event::kind_name(kind),
                        message,
                        fault: !matches!(error, HandleError::Stage(_)),
                    });
                }
                if is_control(kind) {
                    vec![event]
                } else {
                    Vec::new()
                }
            }
        };
        // An audio frame that ends here (the VAD keeps it) is done: its lag
        // is measured now. Otherwise what it became carries its arrival on.
        if is_audio(kind) && !outputs.iter().any(|o| is_audio(kind_of(o))) {
            let lag = arrived.elapsed();
            crate::metrics::AUDIO.frame_lag.record(lag);
            crate::metrics::AUDIO.recent_lag.record(lag);
        }
        for out in outputs {
            if !next
                .send(Item {
                    event: out,
                    arrived,
                })
                .await
            {
                return;
            }
        }
    }
}
