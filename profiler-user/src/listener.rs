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
