//! A TCP proxy between the server and its database, for fault tests: it can
//! be taken down (every connection cut, new ones refused) and brought back,
//! or made slow (each chunk towards the database held for a while). It
//! stands in for the network, not for the database: the database is real.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Default)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    down: AtomicBool,
    /// Bumped when taken down: connections of an older generation close.
    generation: AtomicU64,
    delay_ms: AtomicU64,
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards to `target`; returns the port.
    pub async fn start(target: String) -> (Proxy, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let proxy = Proxy::default();
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if p.inner.down.load(SeqCst) {
                    drop(client); // refused, as a stopped server would
                    continue;
                }
                let p = p.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&target).await {
                        p.pipe(client, server).await;
                    }
                });
            }
        });
        (proxy, port)
    }

    /// Cuts every connection and refuses new ones until `up`.
    pub fn down(&self) {
        self.inner.down.store(true, SeqCst);
        self.inner.generation.fetch_add(1, SeqCst);
    }

    pub fn up(&self) {
        self.inner.down.store(false, SeqCst);
    }

    /// Holds each chunk sent towards the database this long.
    pub fn delay(&self, d: Duration) {
        self.inner.delay_ms.store(d.as_millis() as u64, SeqCst);
    }

    async fn pipe(&self, client: TcpStream, server: TcpStream) {
        let generation = self.inner.generation.load(SeqCst);
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let alive = |p: &Proxy| p.inner.generation.load(SeqCst) == generation;
        let up = {
            let p = self.clone();
            async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n =
                        match tokio::time::timeout(Duration::from_millis(100), cr.read(&mut buf))
                            .await
                        {
                            Ok(Ok(0) | Err(_)) => break,
                            Ok(Ok(n)) => n,
                            Err(_) if alive(&p) => continue,
                            Err(_) => break,
                        };
                    let delay = p.inner.delay_ms.load(SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    if !alive(&p) || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        };
        let down = {
            let p = self.clone();
            async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n =
                        match tokio::time::timeout(Duration::from_millis(100), sr.read(&mut buf))
                            .await
                        {
                            Ok(Ok(0) | Err(_)) => break,
                            Ok(Ok(n)) => n,
                            Err(_) if alive(&p) => continue,
                            Err(_) => break,
                        };
                    if !alive(&p) || cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        };
        // Either side ending (or the cut) ends both.
        tokio::select! {
            () = up => {}
            () = down => {}
        }
    }
}
