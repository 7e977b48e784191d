//! [`Receiver`]: a webhook receiver on 127.0.0.1 for the tests, over raw TCP: it records every
//! request it gets (headers and raw body) and answers as told, request by request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status, an empty body.
    Status(u16),
    /// A redirect to this URL.
    Redirect(u16, String),
    /// Nothing, ever: the connection is held open (a receiver that hangs).
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    /// The raw body, as signed.
    pub body: Vec<u8>,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A receiver; stops when dropped.
pub struct Receiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    /// The port it listens on.
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// A receiver that answers its n-th request (from 0) with `script[n]`, and 200 once the
    /// script is spent.
    pub async fn start(script: Vec<Answer>) -> Self {
        Self::start_on(
            TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            script,
        )
    }

    /// Like [`Receiver::start`], on `listener` (a port a test chose first).
    pub fn start_on(listener: TcpListener, script: Vec<Answer>) -> Self {
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let task = tokio::spawn({
            let received = received.clone();
            async move {
                loop {
                    let Ok((mut socket, _)) = listener.accept().await else {
                        return;
                    };
                    let received = received.clone();
                    let script = script.clone();
                    tokio::spawn(async move {
                        let Some(request) = read_request(&mut socket).await else {
                            return;
                        };
                        received.lock().expect("not poisoned").push(request);
                        let answer = script
                            .lock()
                            .expect("not poisoned")
                            .next()
                            .unwrap_or(Answer::Status(200));
                        let head = match answer {
                            Answer::Status(code) => format!(
                                "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            ),
                            Answer::Redirect(code, to) => format!(
                                "HTTP/1.1 {code} X\r\nlocation: {to}\r\ncontent-length: 0\r\n\
                                 connection: close\r\n\r\n"
                            ),
                            Answer::Hang => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                return;
                            }
                        };
                        let _ = socket.write_all(head.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    });
                }
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            port,
            received,
            task,
        }
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("not poisoned").clone()
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some(Received { headers, body })
}
