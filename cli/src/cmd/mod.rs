//! One module per subcommand.

pub mod demo;
pub mod jobs;
pub mod logs;
pub mod parallel;
pub mod server;
pub mod spans;
pub mod submit;

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
