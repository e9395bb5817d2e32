use crate::audio::frames::{self, TrackLayout};
use crate::audio::wav;
use crate::pipeline::bindings::types::Track;
use crate::simulator::{self, SimConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Tracks {
    /// Only the caller (as `<Connect><Stream>`).
    Inbound,
    /// Caller and callee (as `<Start><Stream track="both_tracks">`).
    Both,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's media-stream URL.
    #[arg(long, default_value = "ws://127.0.0.1:8000/twilio/media-stream")]
    url: String,
    /// What the caller says: any WAV (stereo: left inbound, right outbound).
    #[arg(long)]
    audio: PathBuf,
    /// Simultaneous calls.
    #[arg(long, default_value_t = 1)]
    calls: usize,
    /// Spread call starts over this many seconds.
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    #[arg(long, value_enum, default_value = "inbound")]
    tracks: Tracks,
    /// Repeat the audio to last at least this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// A customParameter for `start` (repeatable), e.g. --param session_id=s1
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Sign the upgrade like Twilio (needs the server's TWILIO_AUTH_TOKEN).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected k=v, got `{s}`"))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rec = wav::read(&args.audio)?;
    let layout = if rec.channels.len() >= 2 {
        TrackLayout::Stereo
    } else {
        TrackLayout::Mono(Track::Inbound)
    };
    let mut config = SimConfig::from_tracks(&args.url, frames::frames(&rec, layout));
    if let Some(secs) = args.duration {
        let want = (secs * 50.0).ceil() as usize;
        let base = config.inbound.clone();
        anyhow::ensure!(!base.is_empty(), "{} holds no audio", args.audio.display());
        config.inbound = Arc::new(
            base.iter()
                .cycle()
                .take(want.max(base.len()))
                .cloned()
                .collect(),
        );
    }
    config.calls = args.calls.max(1);
    config.ramp = Duration::from_secs_f64(args.ramp.max(0.0));
    config.both_tracks = matches!(args.tracks, Tracks::Both);
    config.params = args.params;
    config.auth_token = args.auth_token.filter(|t| !t.is_empty());
    eprintln!(
        "simulating {} call(s) of {:.1} s against {}",
        config.calls,
        config.inbound.len() as f64 * 0.02,
        config.url
    );
    let report = simulator::run(config).await;
    print!("{}", report.render());
    let failed = report.failed.load(std::sync::atomic::Ordering::Relaxed);
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
