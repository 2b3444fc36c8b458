//! The Dockerfile copies only the directories it names (so a local `target/` never enters the
//! image); a workspace member it misses breaks the image's `cargo build`, which no CI runs
//! (there is no Docker engine). This checks the list against the workspace.

#[test]
fn dockerfile_copies_every_workspace_member() {
    let root = env!("CARGO_MANIFEST_DIR");
    let cargo = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap();
    let docker = std::fs::read_to_string(format!("{root}/Dockerfile")).unwrap();
    let members_line = cargo
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("[workspace] members in Cargo.toml");
    let copied: Vec<&str> = docker
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .flat_map(|l| l.split_whitespace())
        .collect();
    let members: Vec<&str> = members_line.split('"').skip(1).step_by(2).collect();
    assert!(members.len() >= 4, "{members_line}");
    for m in members {
        // The top-level directory holding the member ("." is the root package: its src/).
        let top = match m.split('/').next().unwrap() {
            "." => "src",
            d => d,
        };
        assert!(
            copied.contains(&top),
            "the Dockerfile does not COPY {top}/ (workspace member {m:?}): `docker build` would fail to load the workspace"
        );
    }
}
