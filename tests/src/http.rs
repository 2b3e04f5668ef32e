//! A minimal HTTP/1.1 GET over a TCP socket, enough to read the profiler's endpoints without a
//! client library.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result};

/// Status code and body of a response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// `GET path` from `address`, with `Connection: close` and a timeout on every step.
pub fn http_get(address: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse> {
    let (status, body) = http_get_bytes(address, path, timeout)?;
    let body = String::from_utf8(body).with_context(|| format!("GET {path}: not UTF-8"))?;
    Ok(HttpResponse { status, body })
}

/// `GET path` for a body that may not be text (a download): status and body bytes.
pub fn http_get_bytes(
    address: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    http_get_with(address, path, &[], timeout)
}

/// `GET path` with more headers (`name`, `value`): status and body bytes.
pub fn http_get_with(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to GET {path}"))?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = &raw[end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size = std::str::from_utf8(&rest[..line_end])?;
        let size = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if size == 0 {
            return Ok(body);
        }
        let after = &rest[line_end + 2..];
        body.extend_from_slice(after.get(..size).context("truncated chunk")?);
        rest = after.get(size + 2..).context("truncated chunk end")?;
    }
}

/// A localhost address with a port free right now (for a child process to bind).
pub fn free_local_address() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The value of one series in a Prometheus/OpenMetrics text exposition, e.g.
/// `profiler_files_written_total{kind="interval"}`.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_series_and_chunks() {
        let text = "# TYPE a counter\na_total 3\nb{kind=\"x\"} 2.5\n# EOF\n";
        assert_eq!(metric_value(text, "a_total"), Some(3.0));
        assert_eq!(metric_value(text, "b{kind=\"x\"}"), Some(2.5));
        assert_eq!(metric_value(text, "a"), None);
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
    }
}
