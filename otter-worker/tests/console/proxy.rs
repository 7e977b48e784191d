//! [`CutProxy`]: a TCP proxy between the browser and the server that can cut every connection
//! it carries, as a network failure would, and remembers whether a request it carried resumed
//! an event stream (`Last-Event-ID`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub(crate) struct CutProxy {
    pub(crate) base: String,
    cut: watch::Sender<u64>,
    /// Requests carried that had a `Last-Event-ID` header.
    pub(crate) resumed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// A proxy on 127.0.0.1 in front of `upstream` (`http://127.0.0.1:port`).
    pub(crate) async fn start(upstream: &str) -> Self {
        let target = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (cut, cuts) = watch::channel(0u64);
        let resumed = Arc::new(AtomicUsize::new(0));
        let seen = resumed.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = target.clone();
                let mut cuts = cuts.clone();
                // Only cuts from now on concern this connection.
                cuts.borrow_and_update();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 16384];
                        loop {
                            let n = cr.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                            if text.contains("\r\nlast-event-id:") {
                                seen.fetch_add(1, Ordering::SeqCst);
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let down = tokio::io::copy(&mut sr, &mut cw);
                    tokio::select! {
                        () = up => {}
                        _ = down => {}
                        _ = cuts.changed() => {}
                    }
                    // Dropping both halves closes both sockets: the browser sees a reset stream.
                });
            }
        });
        Self {
            base,
            cut,
            resumed,
            task,
        }
    }

    /// Cuts every connection open now.
    pub(crate) fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
