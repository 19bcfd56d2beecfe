//! One module per subcommand.

pub mod components;
pub mod data;
pub mod demo;
pub mod jobs;
pub mod logs;
pub mod new;
pub mod parallel;
pub mod python;
pub mod runner;
pub mod runners;
pub mod server;
pub mod spans;
pub mod submit;
pub mod tenants;

use std::time::Duration;

use clap::Args as ClapArgs;
use tessera_api::Client;

/// How clients reach the server.
#[derive(Debug, Clone, ClapArgs)]
pub struct ServerRef {
    /// The server's URL.
    #[arg(long, env = "TESSERA_SERVER", default_value = tessera_api::DEFAULT_SERVER, global = true)]
    pub server: String,
    /// The server's bearer token.
    #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

impl ServerRef {
    /// A client of that server.
    pub fn client(&self) -> Client {
        Client::new(
            self.server.clone(),
            self.token.clone().filter(|t| !t.is_empty()),
        )
    }
}

/// The longest duration a flag takes: a year.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Reads a `--…-seconds` flag: a number of seconds from 0 to a year (fractions allowed).
pub fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(value.is_finite() && (0.0..=MAX_SECONDS).contains(&value)) {
        return Err(format!(
            "{text} is out of range: give 0 to {MAX_SECONDS} seconds (a year)"
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

/// Reads a `--…-seconds` flag that must be more than zero.
pub fn positive_seconds(text: &str) -> Result<Duration, String> {
    let d = seconds(text)?;
    if d.is_zero() {
        return Err(format!("{text} is out of range: give more than 0 seconds"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_flags_refuse_what_would_overflow() {
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        assert!(positive_seconds("0").unwrap_err().contains("more than 0"));
        for bad in ["1e20", "inf", "NaN", "-1", "soon"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }
}
