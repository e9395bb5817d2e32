//! One call through a pipeline: tasks joined by bounded channels, so a slow
//! stage (Whisper) never stalls audio intake. A stage granted a capability
//! (it waits on I/O) or allowed a long deadline gets a task of its own;
//! consecutive quick, self-contained stages (the audio stages: codec, VAD,
//! speaker priority) share one, so a frame crosses them without a channel
//! hop and a task wake-up per stage.

use super::event::kind_of;
use super::instance::{HandleError, StageInstance};
use super::loaded::{LoadedPipeline, LoadedStage};
use super::stats::{StageStats, StatsSnapshot};
use crate::bindings::types::{CallInfo, Custom, Event, EventKind, Track};
use crate::capabilities::provenance;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// What comes out of the last stage, in order.
pub struct CallOutput(mpsc::Receiver<Output>);

impl CallOutput {
    /// The next event, or `None` once the call's stages have all finished.
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await.map(|o| o.event)
    }

    /// The next event with what the host knows of where it came from.
    pub async fn recv_marked(&mut self) -> Option<Output> {
        self.0.recv().await
    }
}

/// An event out of the call.
#[derive(Debug)]
pub struct Output {
    pub event: Event,
    /// A suggestion whose words are mostly the language model's (the host
    /// decides, not the stage: see `capabilities::provenance`).
    pub model_written: bool,
}

/// An event on its way between stages, with when it entered the call.
struct Item {
    event: Event,
    arrived: Instant,
    /// See [`Output::model_written`].
    model_written: bool,
}

impl Item {
    fn new(event: Event) -> Self {
        Self {
            event,
            arrived: Instant::now(),
            model_written: false,
        }
    }
}

fn is_audio(kind: EventKind) -> bool {
    matches!(kind, EventKind::EncodedAudio | EventKind::Audio)
}

/// Where a stage sends what it produces: the next stage, or out of the call.
enum Next {
    Stage(mpsc::Sender<Item>),
    Output(mpsc::Sender<Output>),
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
                let output = Output {
                    event: item.event,
                    model_written: item.model_written,
                };
                tx.send(output).await.is_ok()
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
        tx.send(Item::new(event))
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
        let (output_tx, output) = mpsc::channel::<Output>(pipeline.queue);
        let groups = task_groups(stages);
        let mut rx = Some(first_rx);
        let session_id: Arc<str> = info.session_id.as_str().into();
        let mut tasks = Vec::with_capacity(groups.len());
        let mut instances = instances.into_iter();
        for (g, range) in groups.iter().enumerate() {
            let Some(task_rx) = rx.take() else { break };
            let next = if g + 1 == groups.len() {
                Next::Output(output_tx.clone())
            } else {
                let (tx, next_rx) = mpsc::channel(pipeline.queue);
                rx = Some(next_rx);
                Next::Stage(tx)
            };
            let mut steps = Vec::with_capacity(range.len());
            for index in range.clone() {
                let Some(inst) = instances.next() else { break };
                let stage = &stages[index];
                steps.push(Step {
                    inst,
                    on: stage.on,
                    counters: Counters {
                        call: stats.clone(),
                        index,
                        stage: crate::metrics::stage(&stage.name),
                        session_id: session_id.clone(),
                    },
                    failures: 0,
                });
            }
            let names = stages[range.clone()]
                .iter()
                .map(|s| &*s.name)
                .collect::<Vec<_>>()
                .join("+");
            // Debug level: entered on every poll, so it costs nothing unless
            // debug logging is on (log lines carry call and stage anyway).
            let span = tracing::debug_span!("stages", call = %id, stages = %names);
            tasks.push(tokio::spawn(
                run_task(steps, task_rx, next).instrument(span),
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
        Ok((call, CallOutput(output)))
    }

    /// For live audio: never waits. A full queue drops the event and counts it.
    pub fn try_send(&self, event: Event) -> Result<(), SendError> {
        let input = self.input.as_ref().ok_or(SendError::Closed)?;
        let tick = self.tick_due(&event);
        input.try_send(Item::new(event)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.dropped.fetch_add(1, Relaxed);
                SendError::Full
            }
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })?;
        if let Some(tick) = tick {
            // Ticks are advisory: a full queue just skips one.
            let _ = input.try_send(Item::new(tick));
        }
        Ok(())
    }

    /// For control events and offline replay: waits for room.
    pub async fn send(&self, event: Event) -> Result<(), SendError> {
        let input = self.input.as_ref().ok_or(SendError::Closed)?;
        let tick = self.tick_due(&event);
        input
            .send(Item::new(event))
            .await
            .map_err(|_| SendError::Closed)?;
        if let Some(tick) = tick {
            input
                .send(Item::new(tick))
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

/// A stage may share a task with its neighbours when it waits on nothing
/// but its own computing and that is short: no capability granted, and a
/// deadline within a few frames (the audio stages have 50 ms).
const SHARED_TASK_DEADLINE_MS: u64 = 100;

fn may_share_a_task(granted: bool, deadline_ms: u64) -> bool {
    !granted && deadline_ms <= SHARED_TASK_DEADLINE_MS
}

/// The stages of each task, in order: runs of stages that may share one,
/// and every other stage alone.
fn task_groups(stages: &[Arc<LoadedStage>]) -> Vec<std::ops::Range<usize>> {
    runs(stages.len(), |i| {
        may_share_a_task(!stages[i].grants.is_empty(), stages[i].limits.deadline_ms)
    })
}

/// Ranges of `0..n`: each maximal run of indices for which `shares` holds,
/// and every other index alone.
fn runs(n: usize, shares: impl Fn(usize) -> bool) -> Vec<std::ops::Range<usize>> {
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    for i in 0..n {
        let joins = i > 0 && shares(i) && shares(i - 1);
        match groups.last_mut() {
            Some(last) if joins => last.end = i + 1,
            _ => groups.push(i..i + 1),
        }
    }
    groups
}

/// One stage inside a task.
struct Step {
    inst: StageInstance,
    on: super::event::KindSet,
    counters: Counters,
    /// Failures of this stage in this call so far.
    failures: u64,
}

/// Runs each event through the task's stages in order; what the last one
/// produces goes on. The two buffers are reused, so a frame costs no
/// allocation here.
async fn run_task(mut steps: Vec<Step>, mut rx: mpsc::Receiver<Item>, next: Next) {
    let mut batch: Vec<Item> = Vec::with_capacity(4);
    let mut produced: Vec<Item> = Vec::with_capacity(4);
    while let Some(item) = rx.recv().await {
        batch.push(item);
        for step in steps.iter_mut() {
            for item in batch.drain(..) {
                step.process(item, &mut produced).await;
            }
            std::mem::swap(&mut batch, &mut produced);
            if batch.is_empty() {
                break;
            }
        }
        for item in batch.drain(..) {
            if !next.send(item).await {
                return;
            }
        }
    }
}

impl Step {
    /// One event through this stage; what it produces is appended to `out`.
    async fn process(&mut self, item: Item, out: &mut Vec<Item>) {
        let Item {
            event,
            arrived,
            model_written,
        } = item;
        let counters = &self.counters;
        let stats = &counters.call[counters.index];
        let totals = &*counters.stage;
        let kind = kind_of(&event);
        if !self.on.contains(kind) {
            stats.skipped.fetch_add(1, Relaxed);
            out.push(Item {
                event,
                arrived,
                model_written,
            });
            return;
        }
        let started = Instant::now();
        let result = self.inst.handle(&event).await;
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
                let ctx = self.inst.context();
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
                self.failures += 1;
                let failures = self.failures;
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
                    vec![event.clone()]
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
        // An utterance carries the arrival of the frame on which the VAD
        // declared its speech over: the transcript made of it is that late.
        if kind == EventKind::Utterance
            && outputs.iter().any(|o| kind_of(o) == EventKind::Transcript)
        {
            let lag = arrived.elapsed();
            crate::metrics::AUDIO.utterance_to_transcript.record(lag);
            crate::metrics::AUDIO
                .utterance_to_transcript_recent
                .record(lag);
        }
        // Marked when the model answered during this event and wrote most
        // of it, or when it is a marked suggestion passed on.
        let said = self
            .inst
            .model_replies()
            .filter(|r| !r.is_empty())
            .map(|r| r.said());
        out.extend(outputs.into_iter().map(|output| {
            Item {
                model_written: (model_written && provenance::same_suggestion(&event, &output))
                    || said
                        .as_ref()
                        .is_some_and(|s| provenance::model_wrote(s, &output)),
                event: output,
                arrived,
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_self_contained_neighbours_share_a_task() {
        // (granted a capability, deadline): the default pipeline's shape.
        let shape = [
            (false, 50),    // codec
            (false, 50),    // vad
            (false, 50),    // speakers
            (true, 35_000), // transcriber
            (false, 50),    // context
            (false, 50),    // clarifier
            (true, 3_000),  // solutions
            (false, 2_000), // a slow stage without grants
            (false, 50),
        ];
        let groups =
            |shape: &[(bool, u64)]| runs(shape.len(), |i| may_share_a_task(shape[i].0, shape[i].1));
        assert_eq!(groups(&shape), vec![0..3, 3..4, 4..6, 6..7, 7..8, 8..9]);
        assert!(groups(&[]).is_empty());
        assert_eq!(groups(&[(true, 50), (true, 50)]), vec![0..1, 1..2]);
        assert_eq!(groups(&[(false, 50)]), vec![0..1]);
    }
}
