//! What `callpipe serve` is told: its arguments and environment (clap),
//! and the settings derived from them alone, before anything is opened.

use crate::twilio::rest::TwilioClient;
use crate::twilio::twiml::StreamMode;
use crate::web::{TwilioAuth, TwilioSettings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Toggle {
    /// Checked with TWILIO_AUTH_TOKEN; without it Twilio's routes refuse everything.
    Auto,
    /// Checked; refuse to start without TWILIO_AUTH_TOKEN.
    On,
    /// Not checked: anyone may post webhooks and open streams (local tries only).
    Off,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    /// <Connect><Stream>: bidirectional, the caller's track; callpipe can speak.
    Connect,
    /// <Start><Stream track="both_tracks">: listen to technician and agent.
    Start,
}

#[derive(Debug, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "CALLPIPE_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// The pipeline new calls run on.
    #[arg(
        long,
        env = "CALLPIPE_PIPELINE",
        default_value = "pipelines/technician-support.toml"
    )]
    pub pipeline: PathBuf,
    /// Concurrent calls accepted; more are refused with 503.
    #[arg(long, env = "CALLPIPE_MAX_CALLS", default_value_t = 1000)]
    pub max_calls: usize,
    /// Where calls, transcripts and suggestions are recorded:
    /// postgres://USER:PASSWORD@HOST/DB, or sqlite://FILE. Default: a SQLite
    /// file in the data dir (callpipe.db).
    #[arg(long, env = "CALLPIPE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Twilio account SID (AC...).
    #[arg(long, env = "TWILIO_ACCOUNT_SID", hide_env_values = true)]
    pub twilio_account_sid: Option<String>,
    /// Twilio auth token: authenticates REST calls and checks webhook signatures.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,
    /// The Twilio number calls are made from (E.164).
    #[arg(long, env = "TWILIO_PHONE_NUMBER")]
    pub twilio_phone_number: Option<String>,
    /// Public base URL Twilio reaches this server on (e.g. https://example.ngrok.app).
    #[arg(long, env = "TWILIO_WEBSOCKET_URL")]
    pub twilio_websocket_url: Option<String>,
    /// Twilio REST API base URL (point it at a stand-in for testing).
    #[arg(
        long,
        env = "CALLPIPE_TWILIO_API_URL",
        default_value = "https://api.twilio.com"
    )]
    pub twilio_api_url: String,
    /// Check X-Twilio-Signature on webhooks and the media-stream upgrade, and
    /// each stream's per-call token.
    #[arg(
        long,
        env = "CALLPIPE_TWILIO_SIGNATURES",
        value_enum,
        default_value = "auto"
    )]
    pub twilio_signatures: Toggle,
    /// Secret that signs each call's media-stream token (default: derived
    /// from TWILIO_AUTH_TOKEN). Give every instance behind one balancer the same.
    #[arg(long, env = "CALLPIPE_STREAM_SECRET", hide_env_values = true)]
    pub stream_secret: Option<String>,
    /// Close a media stream that sends no `start` within this many ms.
    #[arg(
        long,
        env = "CALLPIPE_STREAM_START_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub stream_start_timeout_ms: u64,
    /// Close a started media stream silent for this many ms (Twilio sends
    /// audio every 20 ms, silence included).
    #[arg(
        long,
        env = "CALLPIPE_STREAM_IDLE_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub stream_idle_timeout_ms: u64,
    /// How TwiML streams calls by default.
    #[arg(
        long,
        env = "CALLPIPE_STREAM_MODE",
        value_enum,
        default_value = "connect"
    )]
    pub stream_mode: Mode,
    /// Token the API and dashboard require (as `Authorization: Bearer`, or
    /// once as `?token=` in the browser). `off` disables it, for local use
    /// only. Unset: one is made at first start and kept in DATA_DIR/api-token.
    #[arg(long, env = "CALLPIPE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// How often the pipeline file and its components are checked for
    /// changes (hot reload); 0 turns watching off (POST
    /// /api/pipelines/reload still works).
    #[arg(long, env = "CALLPIPE_WATCH_MS", default_value_t = 1000)]
    pub watch_ms: u64,
    /// This host's name among the hosts sharing the database (default:
    /// HOSTNAME:PORT). Calls record it; at start a host interrupts only
    /// its own unfinished calls.
    #[arg(long, env = "CALLPIPE_HOST_ID")]
    pub host_id: Option<String>,
    /// Where the other hosts reach this one (chat and mute for a call it
    /// runs are forwarded there). Default: http:// and the listen address.
    #[arg(long, env = "CALLPIPE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// The secret the hosts sharing a database sign the requests they
    /// forward to each other with (HMAC-SHA256; at least 16 bytes, the same
    /// on every host). Without it a request about a call another host runs
    /// is refused with 503; the user's API token is never sent to a host.
    #[arg(long, env = "CALLPIPE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// The host's lease in the database, in ms: renewed every third of it;
    /// once it expires the other hosts mark the host's calls interrupted.
    #[arg(long, env = "CALLPIPE_LEASE_MS", default_value_t = 15_000)]
    pub lease_ms: u64,
    /// How long after a host's lease expired (on the database's clock) the
    /// others end its calls as interrupted, in ms; default: one lease. A
    /// host back within the grace finds its calls untouched; one back later
    /// reclaims those it still runs.
    #[arg(long, env = "CALLPIPE_LEASE_GRACE_MS")]
    pub lease_grace_ms: Option<u64>,
    /// Seconds a call may ring with no host (its TwiML served, its stream
    /// never started) before any host ends it as interrupted.
    #[arg(long, env = "CALLPIPE_UNSTARTED_S", default_value_t = 600)]
    pub unstarted_s: u64,
    /// On SIGTERM, seconds the live calls get to finish (no new call is
    /// taken meanwhile, /ready says 503) before they are cut.
    #[arg(long, env = "CALLPIPE_DRAIN_S", default_value_t = 30)]
    pub drain_s: u64,
    /// On SIGTERM, seconds the whole stop may take: the drain, the end of
    /// chat sessions and the last writes to the store fit in it (the drain
    /// is shortened to leave the rest 10 s). Keep the supervisor's grace
    /// period above it (Kubernetes' terminationGracePeriodSeconds,
    /// systemd's TimeoutStopSec, compose's stop_grace_period).
    #[arg(long, env = "CALLPIPE_SHUTDOWN_S", default_value_t = 40)]
    pub shutdown_s: u64,
    /// Seconds an ended session stays in memory; after that the store
    /// answers for it.
    #[arg(long, env = "CALLPIPE_SESSION_GRACE_S", default_value_t = 60)]
    pub session_grace_s: u64,
}

impl Config {
    /// The host's lease timing among the hosts sharing the database.
    pub fn timing(&self) -> crate::cluster::Timing {
        let lease = Duration::from_millis(self.lease_ms.max(300));
        crate::cluster::Timing {
            lease,
            grace: self.lease_grace_ms.map_or(lease, Duration::from_millis),
            unstarted: Duration::from_secs(self.unstarted_s.max(1)),
        }
    }

    /// One budget for the whole stop, and the part of it the live calls get
    /// (the rest ends chats and stores what is queued).
    pub fn stop_budget(&self) -> (Duration, Duration) {
        let budget = Duration::from_secs(self.shutdown_s.max(1));
        let drain =
            Duration::from_secs(self.drain_s).min(budget.saturating_sub(super::stop::AFTER_DRAIN));
        (budget, drain)
    }

    /// Twilio's side: the settings the routes use, and the REST client when
    /// both the account SID and the auth token are given.
    pub fn twilio(&self) -> anyhow::Result<(TwilioSettings, Option<TwilioClient>)> {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let token = given(&self.twilio_auth_token);
        let sid = given(&self.twilio_account_sid);
        let client = match (&sid, &token) {
            (Some(sid), Some(token)) => Some(TwilioClient::new(
                &self.twilio_api_url,
                sid,
                token,
                Duration::from_secs(10),
            )?),
            _ => None,
        };
        let auth = twilio_auth(self.twilio_signatures, token.is_some())?;
        let settings = TwilioSettings {
            account_sid: sid,
            auth_token: token,
            phone_number: given(&self.twilio_phone_number),
            public_url: given(&self.twilio_websocket_url),
            auth,
            stream_secret: given(&self.stream_secret),
            stream_timeouts: crate::calls::media_stream::StreamTimeouts {
                start: Duration::from_millis(self.stream_start_timeout_ms.max(1)),
                idle: Duration::from_millis(self.stream_idle_timeout_ms.max(1)),
            },
            stream_mode: Some(match self.stream_mode {
                Mode::Connect => StreamMode::Connect,
                Mode::Start => StreamMode::Start,
            }),
        };
        Ok((settings, client))
    }
}

/// How Twilio's routes are guarded, from the setting and whether there is
/// an auth token to check signatures with.
pub fn twilio_auth(signatures: Toggle, token: bool) -> anyhow::Result<TwilioAuth> {
    Ok(match (signatures, token) {
        (Toggle::Off, _) => TwilioAuth::Open,
        (Toggle::On | Toggle::Auto, true) => TwilioAuth::Signed,
        (Toggle::On, false) => {
            anyhow::bail!("CALLPIPE_TWILIO_SIGNATURES=on needs TWILIO_AUTH_TOKEN")
        }
        (Toggle::Auto, false) => TwilioAuth::Refused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_unless_explicitly_off() {
        assert!(matches!(
            twilio_auth(Toggle::Auto, true),
            Ok(TwilioAuth::Signed)
        ));
        assert!(matches!(
            twilio_auth(Toggle::Auto, false),
            Ok(TwilioAuth::Refused)
        ));
        assert!(matches!(
            twilio_auth(Toggle::Off, true),
            Ok(TwilioAuth::Open)
        ));
        let e = twilio_auth(Toggle::On, false).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("TWILIO_AUTH_TOKEN")));
    }

    #[test]
    fn the_drain_leaves_room_for_the_last_writes() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        let config = |args: &[&str]| Cli::parse_from([&["serve"], args].concat()).config;
        let (budget, drain) = config(&["--shutdown-s", "40", "--drain-s", "30"]).stop_budget();
        assert_eq!((budget.as_secs(), drain.as_secs()), (40, 30));
        let (budget, drain) = config(&["--shutdown-s", "20", "--drain-s", "30"]).stop_budget();
        assert_eq!((budget.as_secs(), drain.as_secs()), (20, 10));
        let timing = config(&["--lease-ms", "100"]).timing();
        assert_eq!(
            timing.lease,
            Duration::from_millis(300),
            "a lease has a floor"
        );
        assert_eq!(
            timing.grace, timing.lease,
            "the grace defaults to one lease"
        );
    }
}
