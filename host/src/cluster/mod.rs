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
use std::time::Duration;

/// How long a lease lasts unless renewed (renewed every third of it).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

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

/// This host among the others: its lease and its relay, running.
pub struct Cluster {
    pub identity: Identity,
    store: Arc<Store>,
    lease: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Takes the lease (before any call starts), then keeps renewing it,
    /// ends the calls of hosts whose lease expired, and relays the events
    /// other hosts store into `sessions`' listeners.
    pub async fn join(
        identity: Identity,
        store: Arc<Store>,
        sessions: Arc<Sessions>,
        lease: Duration,
    ) -> Result<Cluster, crate::store::StoreError> {
        store.set_host(&identity.id);
        store
            .renew_lease(&identity.id, &identity.address, lease)
            .await?;
        let mut tasks = vec![tokio::spawn(keep_lease(
            identity.clone(),
            store.clone(),
            sessions.clone(),
            lease,
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
            lease,
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
        if let Err(e) = self.store.release_lease(&self.identity.id).await {
            tracing::warn!("cannot release this host's lease: {e}");
        }
    }
}

/// Renews the lease every third of it; after each renewal, ends the calls
/// of hosts whose lease ran out (whoever notices first; each call once).
async fn keep_lease(
    identity: Identity,
    store: Arc<Store>,
    sessions: Arc<Sessions>,
    lease: Duration,
) {
    let mut every = tokio::time::interval(lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = store
            .renew_lease(&identity.id, &identity.address, lease)
            .await
        {
            tracing::warn!(host = %identity.id, "cannot renew this host's lease: {e}");
            continue;
        }
        let orphans = match store.orphaned_calls().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("cannot look for calls of hosts that are gone: {e}");
                continue;
            }
        };
        for (session, host) in orphans {
            match store.end_unfinished(&session, "interrupted").await {
                Ok(Some(id)) => {
                    tracing::warn!(
                        session = %session,
                        host = %host,
                        "the call's host is gone (its lease expired): marked interrupted"
                    );
                    // Stored here, not by this host's writer: this host's
                    // own listeners get it as the other hosts do (their
                    // relays skip what this host stored).
                    match store.events_by_id(&[id]).await {
                        Ok(rows) => {
                            for (session, row) in rows {
                                relay::relay(&sessions, session, row);
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
