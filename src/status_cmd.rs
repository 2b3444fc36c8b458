//! `netstorm status --config F`: membership, leader, epochs, per-node rounds and traffic,
//! the coordinator's link estimates and alerts, read from every node's metrics endpoint.

use anyhow::Result;
use clap::Args;
use netstorm_node::config::ClusterConfig;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The cluster config (nodes need a `metrics = "IP:PORT"` key to be read).
    #[arg(long)]
    config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// How long to wait for each node's endpoint.
    #[arg(long, default_value_t = 2.0)]
    timeout_s: f64,
}

pub fn run(a: &StatusArgs) -> Result<()> {
    let cfg = ClusterConfig::load(&a.config)?;
    let st = netstorm_node::status::query(&cfg, Duration::from_secs_f64(a.timeout_s));
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", netstorm_node::status::render_text(&st));
    }
    Ok(())
}
