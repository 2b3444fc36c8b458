//! `netstorm up --config FILE --node NAME`: runs NetStorm for one node of a real cluster
//! (spawns `netstorm-dp` and `netstorm-cp`, forwards signals, exits when they exit). The work
//! is in `netstorm_node::up`.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Cluster config (TOML), the same file on every host.
    #[arg(long)]
    pub config: PathBuf,
    /// This host's node name in the config.
    #[arg(long)]
    pub node: String,
    /// Print the data plane's counters on stderr every interval.
    #[arg(long)]
    pub stats: bool,
}

pub fn run(a: &UpArgs) -> Result<()> {
    let extra: Vec<String> = if a.stats {
        vec!["--stats".into()]
    } else {
        Vec::new()
    };
    let code = netstorm_node::up::run(&a.config, &a.node, &extra)?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
