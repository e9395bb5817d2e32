//! Several hosts, one service: each host has an id recorded on the calls it
//! runs and renews a lease in the shared database; it relays the events
//! other hosts store to its own listeners (`relay`), and hands requests
//! about a call another host runs to that host (`forward`).
//!
//! On SQLite (one host) the same code runs with nobody else to hear from.

pub mod forward;
mod relay;

use crate::sessions::Sessions;
use crate::store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How long a lease lasts unless renewed (renewed every third of it).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// How long a call may ring with no host before it is ended.
pub const DEFAULT_UNSTARTED: Duration = Duration::from_secs(600);

/// Who this host is to the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `CALLPIPE_HOST_ID`, or `HOSTNAME:PORT` (the port asked for).
    pub id: String,
    /// Where the other hosts reach this one: `CALLPIPE_ADVERTISE_URL`, or
    /// `http://` and the listening address (the hostname when it listens
    /// on every interface).
    pub address: String,
}

impl Identity {
    /// `configured` is the address asked for (its port names the host, so
    /// a host listening on an ephemeral port keeps its id across restarts);
    /// `listen` is the one bound.
    pub fn new(
        id: Option<&str>,
        advertise: Option<&str>,
        configured: SocketAddr,
        listen: SocketAddr,
    ) -> Identity {
        let hostname = hostname();
        let id = id
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("{hostname}:{}", configured.port()));
        let address = advertise
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches('/').to_string())
            .unwrap_or_else(|| {
                if listen.ip().is_unspecified() {
                    format!("http://{hostname}:{}", listen.port())
                } else {
                    format!("http://{listen}")
                }
            });
        Identity { id, address }
    }
}

/// The machine's name (Linux), or `localhost`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// Whether this host holds its lease: the last renewal succeeded less
/// than a lease ago (on this host's monotonic clock, which no skew moves).
/// A host that lost it takes no new call: another host may soon take it
/// for gone.
pub struct LeaseHealth {
    lease: Duration,
    epoch: Instant,
    /// Milliseconds from `epoch` to the last successful renewal.
    renewed_ms: AtomicU64,
}

impl LeaseHealth {
    fn new(lease: Duration) -> LeaseHealth {
        LeaseHealth {
            lease,
            epoch: Instant::now(),
            renewed_ms: AtomicU64::new(0),
        }
    }

    fn renewed(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.renewed_ms.store(ms, Relaxed);
    }

    /// Since the last successful renewal.
    pub fn since_renewed(&self) -> Duration {
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(self.renewed_ms.load(Relaxed)))
    }

    pub fn holds(&self) -> bool {
        self.since_renewed() < self.lease
    }
}

/// This host among the others: its lease and its relay, running.
pub struct Cluster {
    pub identity: Identity,
    store: Arc<Store>,
    lease: Duration,
    /// This process among those that ever ran as `identity.id`.
    incarnation: String,
    pub health: Arc<LeaseHealth>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A random id for this process.
fn incarnation() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    hex::encode(bytes)
}

impl Cluster {
    /// Takes the lease (before any call starts), then keeps renewing it,
    /// ends the calls of hosts whose lease expired more than `grace` ago and
    /// the calls no host took within `unstarted`, reclaims this host's live
    /// calls another host marked interrupted, and relays the events other
    /// hosts store into `sessions`' listeners.
    ///
    /// A lease under the same id held by another process (a previous one
    /// killed a moment ago, or a second host given the same id) is waited
    /// for until it would have expired; if it is still renewed then, two
    /// processes share one id and this one refuses to start.
    pub async fn join(
        identity: Identity,
        store: Arc<Store>,
        sessions: Arc<Sessions>,
        timing: Timing,
    ) -> Result<Cluster, crate::store::StoreError> {
        store.set_host(&identity.id);
        sessions.set_claim_grace(timing.grace);
        let incarnation = incarnation();
        let give_up = Instant::now() + timing.lease + timing.lease / 3;
        let mut said = false;
        loop {
            match store
                .renew_lease(&identity.id, &incarnation, &identity.address, timing.lease)
                .await
            {
                Ok(()) => break,
                Err(crate::store::StoreError::HostIdTaken(_)) if Instant::now() < give_up => {
                    if !said {
                        tracing::warn!(
                            host = %identity.id,
                            "another process holds this host's lease (a previous run killed a \
                             moment ago?): waiting up to {} s for it to expire",
                            (timing.lease + timing.lease / 3).as_secs()
                        );
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let health = Arc::new(LeaseHealth::new(timing.lease));
        health.renewed();
        let mut tasks = vec![tokio::spawn(keep_lease(
            identity.clone(),
            incarnation.clone(),
            store.clone(),
            sessions.clone(),
            timing,
            health.clone(),
        ))];
        if let Some(listener) = store.listen().await? {
            tasks.push(tokio::spawn(relay::run(
                listener,
                identity.id.clone(),
                store.clone(),
                sessions,
            )));
        }
        Ok(Cluster {
            identity,
            store,
            lease: timing.lease,
            incarnation,
            health,
            tasks,
        })
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Stops renewing and gives the lease up: this host's calls are ended
    /// (a clean stop), so nobody needs to wait for the lease to expire.
    pub async fn leave(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Err(e) = self
            .store
            .release_lease(&self.identity.id, &self.incarnation)
            .await
        {
            tracing::warn!("cannot release this host's lease: {e}");
        }
    }
}

/// The cluster's clocks.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a lease lasts unless renewed (renewed every third of it).
    pub lease: Duration,
    /// How long after a lease expired its host's calls count as orphans.
    pub grace: Duration,
    /// How long a call may wait for a host (ringing, its stream not
    /// started) before it is ended as never started.
    pub unstarted: Duration,
}

impl Timing {
    pub fn new(lease: Duration) -> Timing {
        Timing {
            lease,
            grace: lease,
            unstarted: DEFAULT_UNSTARTED,
        }
    }
}

/// Renews the lease every third of it; after each renewal, ends the calls
/// of hosts gone for longer than the grace and the calls no host took
/// (whoever notices first; each call once), and after a renewal that
/// follows failed ones, reclaims the calls this host still runs.
async fn keep_lease(
    identity: Identity,
    incarnation: String,
    store: Arc<Store>,
    sessions: Arc<Sessions>,
    timing: Timing,
    health: Arc<LeaseHealth>,
) {
    let mut every = tokio::time::interval(timing.lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // After an outage this host may be the first back: the others have not
    // had a chance to renew, and would look gone. It judges nobody until
    // they have had a lease's time.
    let mut judge_after: Option<Instant> = None;
    loop {
        every.tick().await;
        if let Err(e) = store
            .renew_lease(&identity.id, &incarnation, &identity.address, timing.lease)
            .await
        {
            if !failing || !health.holds() {
                tracing::warn!(
                    host = %identity.id,
                    "cannot renew this host's lease ({} s since the last renewal{}): {e}",
                    health.since_renewed().as_secs(),
                    if health.holds() { "" } else { "; taking no new calls" }
                );
            }
            failing = true;
            continue;
        }
        health.renewed();
        if failing {
            failing = false;
            tracing::info!(host = %identity.id, "lease renewed again; checking this host's calls");
            reclaim_own(&identity.id, &store, &sessions).await;
            judge_after = Some(Instant::now() + timing.lease);
        }
        if judge_after.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        sweep(&store, &sessions, timing).await;
    }
}

/// The calls this host still runs that another host marked interrupted
/// while this one could not reach the database are this host's again.
async fn reclaim_own(me: &str, store: &Store, sessions: &Sessions) {
    for session in sessions.running_here() {
        match store.reclaim(&session, me).await {
            Ok(Some(id)) => {
                tracing::warn!(
                    session = %session,
                    "another host had marked this live call interrupted: reclaimed"
                );
                match store.events_by_id(&[id]).await {
                    Ok(rows) => {
                        for (session, row) in rows {
                            if let Ok(change) = serde_json::from_str(&row.data) {
                                sessions.reclaimed(&session, row.id, change);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(session = %session, "cannot read the status back: {e}")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(session = %session, "cannot reclaim a live call: {e}"),
        }
    }
}

/// Ends the calls of hosts gone for longer than the grace, and the calls
/// no host took in time.
async fn sweep(store: &Store, sessions: &Sessions, timing: Timing) {
    let orphans = match store.orphaned_calls(timing.grace).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!("cannot look for calls of hosts that are gone: {e}");
            return;
        }
    };
    let unstarted = match store.unstarted_calls(timing.unstarted).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!("cannot look for calls no host took: {e}");
            Vec::new()
        }
    };
    let ends = orphans
        .into_iter()
        .map(|(session, host)| (session, Some(host)))
        .chain(unstarted.into_iter().map(|s| (s, None)));
    for (session, host) in ends {
        match store.end_unfinished(&session, "interrupted").await {
            Ok(Some(id)) => {
                match &host {
                    Some(host) => tracing::warn!(
                        session = %session,
                        host = %host,
                        "the call's host is gone (its lease expired): marked interrupted"
                    ),
                    None => tracing::warn!(
                        session = %session,
                        "no host took the call within {} s (its stream never started): \
                         marked interrupted",
                        timing.unstarted.as_secs()
                    ),
                }
                // Stored here, not by this host's writer: this host's
                // own listeners get it as the other hosts do (their
                // relays skip what this host stored).
                match store.events_by_id(&[id]).await {
                    Ok(rows) => {
                        for (session, row) in rows {
                            relay::relay(sessions, session, row);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(session = %session, "cannot read the status back: {e}")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(session = %session, "cannot end an orphaned call: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_defaults_to_hostname_and_port() {
        let any: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let i = Identity::new(None, None, any, any);
        assert!(i.id.ends_with(":8000"), "{i:?}");
        assert!(
            i.address.starts_with("http://") && i.address.ends_with(":8000"),
            "{i:?}"
        );
        let i = Identity::new(Some(" b "), Some("http://b.internal:80/"), local, local);
        assert_eq!(i.id, "b");
        assert_eq!(i.address, "http://b.internal:80");
        // An ephemeral port: the id keeps the port asked for, the address
        // the one bound.
        let ephemeral: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let i = Identity::new(None, Some(""), ephemeral, local);
        assert!(i.id.ends_with(":0"), "{i:?}");
        assert_eq!(i.address, "http://127.0.0.1:9001");
    }
}
