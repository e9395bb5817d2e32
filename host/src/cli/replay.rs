use crate::audio::frames::{self, FRAME_MS, TrackLayout};
use crate::audio::wav;
use crate::bindings::types::{Codec, EncodedAudio, Track};
use crate::pipeline::event::{describe, to_json};
use crate::pipeline::{Call, CallInfo, Event};
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TrackArg {
    Inbound,
    Outbound,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline to run.
    pipeline: PathBuf,
    /// A WAV file: PCM, float or mu-law, any rate; stereo plays left as
    /// inbound (technician) and right as outbound (agent).
    #[arg(long)]
    audio: PathBuf,
    /// Track for a mono recording.
    #[arg(long, value_enum, default_value = "inbound")]
    track: TrackArg,
    /// Pace frames every 20 ms as a live call would, instead of as fast as possible.
    #[arg(long)]
    realtime: bool,
    /// Print events as JSON lines.
    #[arg(long)]
    json: bool,
    /// Also print audio frames (hidden by default: there are 50 a second).
    #[arg(long)]
    show_audio: bool,
}

pub async fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let recording = wav::read(&args.audio)?;
    let layout = if recording.channels.len() >= 2 {
        TrackLayout::Stereo
    } else {
        TrackLayout::Mono(match args.track {
            TrackArg::Inbound => Track::Inbound,
            TrackArg::Outbound => Track::Outbound,
        })
    };
    let tracks = frames::frames(&recording, layout);

    let runtime = super::small_runtime(data_dir)?;
    let pipeline = match super::load_pipeline(&runtime, &args.pipeline, data_dir).await {
        Ok(p) => Arc::new(p),
        Err(diags) => {
            eprintln!("{diags}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let info = CallInfo {
        session_id: format!("replay-{}", std::process::id()),
        call_sid: String::new(),
        technician_id: "replay".into(),
        technician_name: "Replay".into(),
        language: pipeline.language.clone(),
        speakers: vec![],
    };
    let (call, mut output) = Call::start(pipeline.clone(), info)
        .await
        .context("cannot start the call")?;

    let json = args.json;
    let show_audio = args.show_audio;
    let printer = tokio::spawn(async move {
        let stdout = std::io::stdout();
        let mut counts = std::collections::BTreeMap::<&'static str, u64>::new();
        while let Some(event) = output.recv().await {
            let kind = crate::pipeline::event::kind_name(crate::pipeline::event::kind_of(&event));
            *counts.entry(kind).or_default() += 1;
            if !show_audio
                && (matches!(event, Event::Audio(_) | Event::EncodedAudio(_))
                    || crate::pipeline::event::is_tick(&event))
            {
                continue;
            }
            let line = if json {
                to_json(&event).to_string()
            } else {
                describe(&event)
            };
            let _ = writeln!(stdout.lock(), "{line}");
        }
        counts
    });

    let started = Instant::now();
    let longest = tracks.iter().map(|t| t.frames.len()).max().unwrap_or(0);
    for i in 0..longest {
        if args.realtime {
            tokio::time::sleep_until((started + Duration::from_millis(i as u64 * FRAME_MS)).into())
                .await;
        }
        for t in &tracks {
            let Some(bytes) = t.frames.get(i) else {
                continue;
            };
            let frame = Event::EncodedAudio(EncodedAudio {
                codec: Codec::Mulaw,
                rate: frames::TWILIO_RATE,
                track: t.track,
                seq: i as u64,
                timestamp_ms: i as u64 * FRAME_MS,
                bytes: bytes.clone(),
            });
            call.send(frame)
                .await
                .context("the pipeline stopped early")?;
        }
    }
    let stats = call.finish().await;
    let counts = printer.await.context("the output printer failed")?;
    let elapsed = started.elapsed();

    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\nreplayed {} ms of audio ({} frames per track) in {:.2?}",
        recording.duration_ms(),
        longest,
        elapsed
    );
    let _ = writeln!(
        err,
        "{:<18} {:>8} {:>8} {:>8} {:>7} {:>8} {:>11}",
        "stage", "in", "out", "passed", "failed", "restarts", "per event"
    );
    for (stage, s) in pipeline.stages.iter().zip(&stats) {
        let _ = writeln!(
            err,
            "{:<18} {:>8} {:>8} {:>8} {:>7} {:>8} {:>11}",
            stage.name,
            s.handled + s.failed,
            s.emitted,
            s.skipped,
            s.failed,
            s.restarts,
            format!("{:.1?}", s.mean_per_event())
        );
    }
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
    let _ = writeln!(err, "pipeline output: {}", summary.join(" "));
    Ok(ExitCode::SUCCESS)
}
