//! `netstorm up --config FILE --node NAME`: starts `netstorm-dp` and `netstorm-cp` for one
//! node, forwards SIGINT/SIGTERM/SIGHUP to both, and exits when either exits (stopping the
//! other).

use crate::config::ClusterConfig;
use crate::sys;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// Finds a sibling binary: next to the running executable (cargo's target dir, an install
/// prefix), then in its parent directory (when running from `target/*/deps` or `examples`),
/// then `PATH`.
pub fn find_binary(name: &str) -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from(name)
}

/// Runs dp + cp for `node` until one exits or a termination signal arrives; returns the exit
/// code to use.
pub fn run(config: &Path, node: &str, extra_dp_args: &[String]) -> anyhow::Result<i32> {
    // Validate before spawning anything, so a bad config fails here with its message.
    let cfg = ClusterConfig::load(config)?;
    cfg.node(node)?;
    cfg.require_secret()?;
    sys::catch_termination_signals();
    let spawn = |bin: &str, extra: &[String]| -> anyhow::Result<Child> {
        let path = find_binary(bin);
        Command::new(&path)
            .arg("--config")
            .arg(config)
            .arg("--node")
            .arg(node)
            .args(extra)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", path.display()))
    };
    let mut dp = spawn("netstorm-dp", extra_dp_args)?;
    let mut cp = match spawn("netstorm-cp", &[]) {
        Ok(c) => c,
        Err(e) => {
            sys::send_signal(dp.id(), libc::SIGTERM);
            let _ = dp.wait();
            return Err(e);
        }
    };
    let code = loop {
        if let Some(sig) = sys::take_signal() {
            sys::send_signal(dp.id(), sig);
            sys::send_signal(cp.id(), sig);
        }
        if let Some(st) = dp.try_wait()? {
            eprintln!("netstorm up: netstorm-dp exited ({st}); stopping netstorm-cp");
            sys::send_signal(cp.id(), libc::SIGTERM);
            let _ = cp.wait();
            break st.code().unwrap_or(1);
        }
        if let Some(st) = cp.try_wait()? {
            eprintln!("netstorm up: netstorm-cp exited ({st}); stopping netstorm-dp");
            sys::send_signal(dp.id(), libc::SIGTERM);
            let _ = dp.wait();
            break st.code().unwrap_or(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(code)
}
