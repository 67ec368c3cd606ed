//! The CLI's HTTP client: one request per connection to `<pool>/api.sock`.

#![forbid(unsafe_code)]

use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::Failure;
use crate::api::views::ApiError;

/// How long one request may take before the CLI gives up.
const TIMEOUT: Duration = Duration::from_secs(120);

/// A client of one pool's daemon.
pub struct Client {
    rt: tokio::runtime::Runtime,
    pool: PathBuf,
    socket: PathBuf,
}

impl Client {
    pub fn new(pool: &Path) -> Result<Client, Failure> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::new(format!("cannot start the client runtime: {e}")))?;
        Ok(Client {
            rt,
            pool: pool.to_owned(),
            socket: pool.join("api.sock"),
        })
    }

    /// Sends a request; the body of a 2xx answer (empty for 204), or the
    /// API's error message.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, Failure> {
        let exchange = self.exchange(method, path, body);
        let (status, bytes) = self
            .rt
            .block_on(async { tokio::time::timeout(TIMEOUT, exchange).await })
            .map_err(|_| {
                Failure::new(format!(
                    "the daemon did not answer within {} s",
                    TIMEOUT.as_secs()
                ))
            })??;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => Failure::new(e.message),
            Err(_) => Failure::new(format!(
                "the daemon answered {status}: {}",
                String::from_utf8_lossy(&bytes).trim()
            )),
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.connect_failure(&e))?;
        let lost = |e: hyper::Error| Failure::new(format!("the daemon's connection failed: {e}"));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(lost)?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "ferrosan");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Failure::new(format!("cannot build the request for {path}: {e}")))?;
        let resp = sender.send_request(req).await.map_err(lost)?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(lost)?.to_bytes();
        driver.abort();
        Ok((status, bytes))
    }

    fn connect_failure(&self, e: &std::io::Error) -> Failure {
        let pool = self.pool.display();
        let socket = self.socket.display();
        let why = match e.kind() {
            IoKind::NotFound => format!("no {socket}"),
            IoKind::ConnectionRefused => format!("{socket} refuses connections"),
            IoKind::PermissionDenied => {
                return Failure::new(format!(
                    "cannot connect to {socket}: permission denied: run as the daemon's user"
                ));
            }
            _ => return Failure::new(format!("cannot connect to {socket}: {e}")),
        };
        Failure::new(format!(
            "no ferrosan daemon is running on pool {pool} ({why}): start one with `ferrosan --pool {pool} serve`"
        ))
    }
}

/// A name as one URL path segment: everything but unreserved characters is
/// percent-encoded, so `a/b` or `x?y` reach the daemon as names.
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("vol-0_a.b~"), "vol-0_a.b~");
        assert_eq!(segment("a/b c?%"), "a%2Fb%20c%3F%25");
        assert_eq!(segment("\u{e9}"), "%C3%A9");
    }

    #[test]
    fn a_missing_socket_says_how_to_start_a_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let client = Client::new(dir.path()).unwrap();
        let err = client.call(Method::GET, "/v1/pool", None).unwrap_err();
        let pool = dir.path().display();
        assert_eq!(
            err.message,
            format!(
                "no ferrosan daemon is running on pool {pool} (no {pool}/api.sock): \
                 start one with `ferrosan --pool {pool} serve`"
            )
        );
        assert_eq!(err.code, 1);
    }
}
