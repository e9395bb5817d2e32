//! One call through a pipeline: a task per stage, joined by bounded channels,
//! so a slow stage (Whisper) never stalls audio intake.

use super::bindings::types::{CallInfo, Event, EventKind};
use super::event::kind_of;
use super::instance::{HandleError, StageInstance};
use super::loader::LoadedPipeline;
use super::stats::{StageStats, StatsSnapshot};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// What comes out of the last stage, in order.
pub type CallOutput = mpsc::Receiver<Event>;

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

pub struct Call {
    pub id: Arc<str>,
    pub info: CallInfo,
    pub pipeline: Arc<LoadedPipeline>,
    input: Option<mpsc::Sender<Event>>,
    tasks: Vec<JoinHandle<()>>,
    stats: Arc<[StageStats]>,
    dropped: AtomicU64,
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
        let id: Arc<str> = if info.call_sid.is_empty() {
            info.session_id.as_str().into()
        } else {
            info.call_sid.as_str().into()
        };
        let stats: Arc<[StageStats]> = pipeline
            .stages
            .iter()
            .map(|_| StageStats::default())
            .collect();
        let mut instances = Vec::with_capacity(pipeline.stages.len());
        for stage in &pipeline.stages {
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
        let (input, mut rx) = mpsc::channel(pipeline.queue);
        let mut tasks = Vec::with_capacity(instances.len());
        for (index, inst) in instances.into_iter().enumerate() {
            let (tx, next_rx) = mpsc::channel(pipeline.queue);
            let stage = pipeline.stages[index].clone();
            let stats = stats.clone();
            let span = tracing::info_span!("stage", call = %id, stage = %stage.name);
            let stage_rx = std::mem::replace(&mut rx, next_rx);
            tasks.push(tokio::spawn(
                run_stage(inst, stage.on, stage_rx, tx, stats, index).instrument(span),
            ));
        }
        let call = Call {
            id,
            info: info.clone(),
            pipeline,
            input: Some(input),
            tasks,
            stats,
            dropped: AtomicU64::new(0),
        };
        call.send(Event::CallStarted(info)).await.ok();
        Ok((call, rx))
    }

    /// For live audio: never waits. A full queue drops the event and counts it.
    pub fn try_send(&self, event: Event) -> Result<(), SendError> {
        let input = self.input.as_ref().ok_or(SendError::Closed)?;
        input.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.dropped.fetch_add(1, Relaxed);
                SendError::Full
            }
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// For control events and offline replay: waits for room.
    pub async fn send(&self, event: Event) -> Result<(), SendError> {
        let input = self.input.as_ref().ok_or(SendError::Closed)?;
        input.send(event).await.map_err(|_| SendError::Closed)
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

async fn run_stage(
    mut inst: StageInstance,
    on: super::event::KindSet,
    mut rx: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Event>,
    stats: Arc<[StageStats]>,
    index: usize,
) {
    let stats = &stats[index];
    while let Some(event) = rx.recv().await {
        let kind = kind_of(&event);
        if !on.contains(kind) {
            stats.skipped.fetch_add(1, Relaxed);
            if tx.send(event).await.is_err() {
                break;
            }
            continue;
        }
        let started = Instant::now();
        let result = inst.handle(&event).await;
        stats.add_busy(started.elapsed());
        let outputs = match result {
            Ok(outputs) => {
                stats.handled.fetch_add(1, Relaxed);
                stats.emitted.fetch_add(outputs.len() as u64, Relaxed);
                outputs
            }
            Err(error) => {
                stats.failed.fetch_add(1, Relaxed);
                let ctx = inst.context();
                match &error {
                    HandleError::Stage(_) => {
                        tracing::warn!(call = %ctx.call_id, stage = %ctx.stage, kind = super::event::kind_name(kind), "event failed: {error}")
                    }
                    HandleError::Fault(_) => {
                        stats.restarts.fetch_add(1, Relaxed);
                        tracing::error!(
                            call = %ctx.call_id,
                            stage = %ctx.stage,
                            kind = super::event::kind_name(kind),
                            "stage instance replaced after a fault: {error}"
                        )
                    }
                }
                if is_control(kind) {
                    vec![event]
                } else {
                    Vec::new()
                }
            }
        };
        for out in outputs {
            if tx.send(out).await.is_err() {
                return;
            }
        }
    }
}
