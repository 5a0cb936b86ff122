//! A private `redis-server` on an ephemeral loopback port, killed on drop, so a test can stop and
//! restart Redis without disturbing anything else.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    pub url: String,
    /// A configuration file, then options (a cluster node's or a replica's settings, say).
    args: Vec<String>,
    child: Option<Child>,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `ready` every 20 ms, blocking the thread, until it holds; panics naming `what` after
/// `timeout`. For the synchronous rig (servers started from plain functions); async tests use
/// `common::eventually`.
pub fn block_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(free_port(), &[])
    }

    /// A server on `port` started with `args` besides the defaults.
    pub fn start_with(port: u16, args: &[String]) -> Self {
        let mut server = Self {
            port,
            url: format!("redis://127.0.0.1:{port}/0"),
            args: args.to_vec(),
            child: None,
        };
        server.restart();
        server
    }

    /// Starts (again) on the same port.
    pub fn restart(&mut self) {
        self.stop();
        // A configuration file, when given, must come first.
        let (file, options) = match self.args.first() {
            Some(first) if !first.starts_with("--") => self.args.split_at(1),
            _ => self.args.split_at(0),
        };
        let child = Command::new("redis-server")
            .args(file)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        block_until(
            &format!("redis-server to answer on {}", self.port),
            Duration::from_secs(10),
            || self.answers(),
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn answers(&self) -> bool {
        redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// A plain connection for looking at what the gateway stored.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
