//! What a new user meets before and around the binary (issue 11): the
//! README's quick start works to the byte and stays two commands, its
//! Install section is there, `cargo install` installs only `snapcache`, and
//! docs/reference.md documents every command and maps the Nix, restic and
//! git commands to them.

use std::path::Path;
use std::process::Command;

use crate::common::*;

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first ```sh block after `heading`, as its non-empty lines.
fn sh_block_after(text: &str, heading: &str) -> Vec<String> {
    let (_, after) = text
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"));
    let (_, block) = after.split_once("```sh\n").expect("a sh block");
    let (block, _) = block.split_once("```").expect("the block ends");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The subcommands `snapcache --help` lists (clap's own `help` aside).
fn subcommands() -> Vec<String> {
    let out = Command::new(bin()).arg("--help").output().unwrap();
    let help = text(&out.stdout);
    let (_, list) = help.split_once("Commands:").expect("a command list");
    let names: Vec<String> = list
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 12, "{help}");
    names
}

#[test]
fn the_quick_start_is_two_commands_and_its_first_prints_what_the_readme_says() {
    let readme = repo_file("README.md");
    let quick = sh_block_after(&readme, "## Quick start");
    assert_eq!(
        quick,
        [
            "cargo run --release -- refresh --from samples/kopi-metadata.json",
            "cargo test"
        ],
        "exactly two commands"
    );
    // The first one, run as the binary it builds, into a fresh store.
    let store = TestStore::new();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/kopi-metadata.json");
    let out = store.ok(&["refresh", "--from", sample.to_str().unwrap()]);
    let printed = text(&out.stdout);
    let claimed = readme
        .split_once("`published: ")
        .and_then(|(_, rest)| rest.split_once(", store "))
        .map(|(line, _)| format!("published: {line}"))
        .expect("the README quotes the result line");
    assert!(
        printed.starts_with(&format!("{claimed}, store ")),
        "README says {claimed:?}, the command printed {printed:?}"
    );
    let again = store.ok(&["refresh", "--from", sample.to_str().unwrap()]);
    assert!(
        text(&again.stdout).starts_with("unchanged"),
        "run again it says unchanged: {}",
        text(&again.stdout)
    );
}

#[test]
fn the_readme_has_an_install_section_with_completions_and_the_man_page() {
    let readme = repo_file("README.md");
    let install = sh_block_after(&readme, "## Install");
    assert!(
        install
            .iter()
            .any(|l| l.starts_with("cargo install --path .")),
        "{install:?}"
    );
    let extras = readme
        .split_once("## Install")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or_default().to_string())
        .unwrap();
    assert!(extras.contains("snapcache completions bash"), "{extras}");
    assert!(extras.contains("snapcache man"), "{extras}");
}

#[test]
fn cargo_install_installs_only_snapcache() {
    // What `cargo install` installs is the package's binary targets: ask
    // cargo for them (no build, no network).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let out = match out {
        Ok(out) if out.status.success() => out,
        other => {
            eprintln!("SKIPPED: `{cargo} metadata` did not run here ({other:?})");
            return;
        }
    };
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let snapcache = packages
        .iter()
        .find(|p| p["name"] == "snapcache")
        .expect("the snapcache package");
    let bins: Vec<&str> = snapcache["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(bins, ["snapcache"], "the published package's binaries");
    // The stress tool is a package of its own that is never published.
    let stress = packages
        .iter()
        .find(|p| p["name"] == "snapcache-stress")
        .expect("the stress tool's package");
    assert_eq!(stress["publish"], serde_json::json!([]), "publish = false");
}

#[test]
fn reference_md_documents_every_command_and_maps_nix_restic_and_git_to_them() {
    let reference = repo_file("docs/reference.md");
    // Each command has a section under "## Commands" (`### pin, unpin`).
    let documented: Vec<&str> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .flat_map(|h| h.split(',').map(str::trim))
        .collect();
    for sub in subcommands() {
        assert!(
            documented.contains(&sub.as_str()),
            "docs/reference.md has no section for `snapcache {sub}` ({documented:?})"
        );
    }
    let (_, table) = reference
        .split_once("## For Nix, restic and git users")
        .expect("the Nix/restic/git section");
    let table = table.split("\n## ").next().unwrap_or_default();
    for theirs in ["nix-env", "nix-collect-garbage", "restic", "git"] {
        assert!(table.contains(theirs), "the table maps {theirs}: {table}");
    }
    for ours in [
        "history", "rollback", "gc", "verify", "show", "diff", "clear", "forget",
    ] {
        assert!(
            table.contains(&format!("`snapcache {ours}")),
            "the table names snapcache {ours}"
        );
    }
    assert!(table.contains("gc --older-than"), "{table}");
}
