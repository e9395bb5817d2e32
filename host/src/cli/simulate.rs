use crate::audio::frames::{self, TrackLayout};
use crate::audio::wav;
use crate::bindings::types::Track;
use crate::simulator::{self, SimConfig};
use std::path::PathBuf;
use std::process::ExitCode;
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
    #[arg(long, required_unless_present = "script", conflicts_with = "script")]
    audio: Option<PathBuf>,
    /// A scripted call (TOML: [[turn]] track/say/pause_s), synthesised with
    /// espeak-ng; afterwards prints what the session got (transcripts,
    /// questions, suggestions).
    #[arg(long)]
    script: Option<PathBuf>,
    /// With --script: longest wait for the server to finish the call.
    #[arg(long, default_value_t = 180)]
    wait_s: u64,
    /// Simultaneous calls.
    #[arg(long, default_value_t = 1)]
    calls: usize,
    /// Spread call starts over this many seconds.
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    #[arg(long, value_enum, default_value = "inbound")]
    tracks: Tracks,
    /// Play this many seconds per call: the audio repeated, or cut short.
    #[arg(long)]
    duration: Option<f64>,
    /// Start call n of N n/N of the way into the audio (wrapping), so the
    /// calls say different things at different moments.
    #[arg(long)]
    rotate: bool,
    /// A customParameter for `start` (repeatable), e.g. --param session_id=s1
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Sign the upgrade like Twilio (needs the server's TWILIO_AUTH_TOKEN).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// With --script: the server's API token, to read the session back.
    /// Default: the one `serve` keeps in the data dir.
    #[arg(long, env = "CALLPIPE_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected k=v, got `{s}`"))
}

pub async fn run(mut args: Args, data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let mut expected = None;
    let (tracks, script) = match (&args.audio, &args.script) {
        (_, Some(path)) => {
            let script = crate::call_script::Script::read(path)?;
            // The agent's turns need the agent's track.
            if script.has_outbound() {
                args.tracks = Tracks::Both;
            }
            expected = script.expected.clone();
            (script.render().await?, true)
        }
        (Some(audio), None) => {
            let rec = wav::read(audio)?;
            let layout = if rec.channels.len() >= 2 {
                TrackLayout::Stereo
            } else {
                TrackLayout::Mono(Track::Inbound)
            };
            (frames::frames(&rec, layout), false)
        }
        (None, None) => anyhow::bail!("give --audio or --script"),
    };
    if script && !args.params.iter().any(|(k, _)| k == "session_id") {
        let id = format!(
            "script-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        args.params.push(("session_id".into(), id));
    }
    let mut config = SimConfig::from_tracks(&args.url, tracks);
    anyhow::ensure!(!config.inbound.is_empty(), "the call holds no audio");
    if let Some(secs) = args.duration {
        anyhow::ensure!(secs > 0.0, "--duration must be positive");
        config.frames = Some((secs * 50.0).ceil() as usize);
    }
    config.calls = args.calls.max(1);
    config.ramp = Duration::from_secs_f64(args.ramp.max(0.0));
    config.both_tracks = matches!(args.tracks, Tracks::Both);
    config.rotate = args.rotate;
    config.params = args.params.clone();
    config.auth_token = args.auth_token.filter(|t| !t.is_empty());
    eprintln!(
        "simulating {} call(s) of {:.1} s against {}",
        config.calls,
        config.frames.unwrap_or(config.inbound.len()) as f64 * 0.02,
        config.url
    );
    let report = simulator::run(config).await;
    print!("{}", report.render());
    let failed = report.failed.load(std::sync::atomic::Ordering::Relaxed);
    if script && failed == 0 {
        let session = args
            .params
            .iter()
            .find(|(k, _)| k == "session_id")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let outcome = session_outcome(
            &args.url,
            &session,
            api_token(args.api_token.as_deref(), data_dir).as_deref(),
            Duration::from_secs(args.wait_s),
            expected.as_deref(),
        )
        .await?;
        print!("{outcome}");
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The token given, else the one `serve` keeps in the data dir, if any
/// (`off`: none).
fn api_token(given: Option<&str>, data_dir: &std::path::Path) -> Option<String> {
    use crate::app::token::{TokenSetting, stored_token, token_setting};
    match token_setting(given) {
        TokenSetting::Off => None,
        TokenSetting::Given(t) => Some(t),
        TokenSetting::Stored => stored_token(data_dir),
    }
}

/// `ws://host:port/...` -> `http://host:port`
fn http_base(ws_url: &str) -> anyhow::Result<String> {
    let (scheme, rest) = ws_url
        .split_once("://")
        .ok_or_else(|| anyhow::anyhow!("`{ws_url}` is not a URL"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    let scheme = if scheme == "wss" { "https" } else { "http" };
    Ok(format!("{scheme}://{host}"))
}

/// Waits for the server to finish the call, then renders what the session
/// holds: transcripts, questions and suggestions, in order (each with its
/// language), and whether the article the script expects was shown.
async fn session_outcome(
    ws_url: &str,
    session: &str,
    token: Option<&str>,
    wait: Duration,
    expected: Option<&str>,
) -> anyhow::Result<String> {
    use std::fmt::Write;
    let url = format!("{}/api/sessions/{session}", http_base(ws_url)?);
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + wait;
    let doc: serde_json::Value = loop {
        let mut request = http.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let got = request.send().await;
        if let Ok(r) = &got
            && r.status() == reqwest::StatusCode::UNAUTHORIZED
        {
            anyhow::bail!(
                "{url} refused the API token: pass --api-token (or CALLPIPE_API_TOKEN), \
                 or run with the server's data dir (its api-token file)"
            );
        }
        if let Ok(r) = got
            && r.status().is_success()
        {
            let doc: serde_json::Value = r.json().await?;
            if !matches!(
                doc["status"].as_str(),
                Some("in-progress") | Some("created")
            ) {
                break doc;
            }
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "session {session} not finished after {} s",
            wait.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut out = format!(
        "\nsession {session}: {}\n",
        doc["status"].as_str().unwrap_or("?")
    );
    for t in doc["transcript"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  [{:>6.1} s] {:<10} [{}] {}",
            t["end_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            t["speaker_role"].as_str().unwrap_or("?"),
            t["language"]
                .as_str()
                .filter(|l| !l.is_empty())
                .unwrap_or("?"),
            t["text"].as_str().unwrap_or("")
        );
    }
    for s in doc["suggestions"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {} [{}] {} ({:.2}): {}",
            if s["type"] == "knowledge_base" {
                "SOLUTION"
            } else {
                "QUESTION"
            },
            s["language"].as_str().unwrap_or("?"),
            s["sources"].as_array().map_or(String::new(), |a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join("+")),
            s["confidence"].as_f64().unwrap_or(0.0),
            if s["type"] == "knowledge_base" {
                &s["title"]
            } else {
                &s["content"]
            }
            .as_str()
            .unwrap_or("")
        );
    }
    if let Some(article) = expected {
        let shown = doc["suggestions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["type"] == "knowledge_base"
                    && s["sources"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == article))
            });
        let _ = writeln!(
            out,
            "  expected {article}: {}",
            if shown { "shown" } else { "NOT shown" }
        );
    }
    Ok(out)
}
