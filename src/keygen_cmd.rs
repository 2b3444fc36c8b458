//! `netstorm keygen --out PATH [--force]`: a new job secret for `secret_file = "PATH"`.
//!
//! 32 bytes from the operating system's generator (ring's `SystemRandom`), written as 64 hex
//! digits and a newline (text survives copying between hosts; the config reader takes hex or
//! raw bytes) to a file created with mode 0600. An existing file is refused unless `--force`.
//! The secret itself is never printed.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the secret (copy it to every host of the job, mode 0600).
    #[arg(long)]
    out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

pub fn run(a: &KeygenArgs) -> Result<()> {
    let secret = netstorm_dataplane::protect::random_secret()
        .map_err(|_| anyhow::anyhow!("the operating system's random generator failed"))?;
    netstorm_node::secret::write_secret_file(&a.out, &secret, a.force).with_context(|| {
        if a.out.exists() && !a.force {
            format!(
                "{} exists: not overwritten (--force replaces it; every host then needs the new secret)",
                a.out.display()
            )
        } else {
            format!("writing {}", a.out.display())
        }
    })?;
    eprintln!(
        "wrote a new job secret to {} (mode 0600); set secret_file = \"{}\" in the cluster config and copy the file to every host",
        a.out.display(),
        a.out.display()
    );
    Ok(())
}
