//! Plain HTTP to the manager's health port from outside the process (a Pod's IP on the local node,
//! a container's published port), where no client library is worth its weight.
use std::{net::SocketAddr, time::Duration};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one probe may take: a manager that is up answers in milliseconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /readyz` on a manager's health address: the HTTP status code, or `None` when nothing
/// answers within two seconds or the answer is not HTTP (callers poll until it is `Some(200)`).
pub async fn readyz_status(addr: SocketAddr) -> Option<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        // The status line fits; the rest of the answer is not needed.
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).into_owned())
    };
    let head = tokio::time::timeout(PROBE_TIMEOUT, exchange).await.ok()?.ok()?;
    status_code(&head)
}

/// The code of an HTTP status line (`HTTP/1.1 503 Service Unavailable` → 503).
fn status_code(head: &str) -> Option<u16> {
    let mut words = head.split_whitespace();
    words.next().filter(|version| version.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback server that answers every connection with `answer`.
    async fn answering(answer: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = vec![0u8; 256];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_the_status_of_an_answer_and_none_without_one() {
        let ready = answering("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        assert_eq!(readyz_status(ready).await, Some(200));
        let draining = answering("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert_eq!(readyz_status(draining).await, Some(503));
        let not_http = answering("VERSION 1.6.18\r\n").await;
        assert_eq!(readyz_status(not_http).await, None);
        // A port nobody listens on: bind, note the port, close.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        assert_eq!(readyz_status(closed).await, None);
    }
}
