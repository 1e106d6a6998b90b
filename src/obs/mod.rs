//! Observability: the HTTP surface (`--http`) of the dispatcher and the worker, with Prometheus
//! metrics, health and readiness probes and a status page, plus the log format.
//!
//! The server itself knows nothing of dispatchers or workers: each of them hands it a [`http::Site`]
//! (its metrics registry, its [`health::Health`], and functions that render its page and its status
//! as JSON). [`terminal`] escapes text from topics before it reaches a terminal.

pub mod client;
pub mod health;
pub mod http;
pub mod page;
pub mod terminal;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Where `--http` listens, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// No HTTP server.
    Off,
    /// Listen on this address (port 0: any free port, logged at start).
    At(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(Listen::Off);
        }
        text.parse::<SocketAddr>().map(Listen::At).map_err(|_| {
            format!("{text:?} is not an address like 127.0.0.1:9464 or [::]:9464, or `off`")
        })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Off => f.write_str("off"),
            Listen::At(addr) => write!(f, "{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_addresses_and_off() {
        assert_eq!("off".parse::<Listen>(), Ok(Listen::Off));
        assert_eq!(
            "127.0.0.1:9464".parse::<Listen>(),
            Ok(Listen::At(SocketAddr::from(([127, 0, 0, 1], 9464))))
        );
        assert!("[::]:0".parse::<Listen>().is_ok());
        let err = "localhost".parse::<Listen>().unwrap_err();
        assert!(err.contains("\"localhost\" is not an address"), "{err}");
        assert!("127.0.0.1:99999".parse::<Listen>().is_err());
    }
}
