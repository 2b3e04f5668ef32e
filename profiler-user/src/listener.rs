//! An axum router served as a task of the current tokio runtime, for the metrics endpoints and
//! the web application alike: bound before it is spawned (so a taken port is an error at
//! start), told its real port when 0 was asked, stopped when dropped.

use std::{io, net::SocketAddr};

use axum::Router;
use tokio::{net::TcpListener, task::JoinHandle};

pub struct Listening {
    address: SocketAddr,
    task: JoinHandle<io::Result<()>>,
}

impl Listening {
    pub async fn start(address: SocketAddr, app: Router) -> io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { address, task })
    }

    /// Where it listens (with the port chosen when 0 was asked).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Waits until the server stops by itself (it only does on an error of its listener).
    pub async fn stopped(&mut self) -> io::Result<()> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(err) => Err(io::Error::other(err)),
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// The raw answer (status line, headers, body) to `GET path`.
    pub(crate) async fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
}
