//! Serving a double on the loopback from the current runtime.

use axum::Router;
use url::Url;

/// A router served on 127.0.0.1 (an ephemeral port); the server stops when dropped.
pub struct Served {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Binds 127.0.0.1:0 and serves `router` from the current runtime.
    pub async fn start(router: Router) -> Served {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = l.local_addr().expect("local address of a bound socket");
        let task = tokio::spawn(async move {
            let _ = axum::serve(l, router).await;
        });
        Served { addr, task }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("a loopback URL")
    }
}

/// Serves `router` on 127.0.0.1 (an ephemeral port) for as long as the current
/// runtime runs (a benchmark's doubles outlive the block that starts them).
pub async fn spawn(router: Router) -> Url {
    let s = Served::start(router).await;
    let url = s.url();
    std::mem::forget(s);
    url
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}
