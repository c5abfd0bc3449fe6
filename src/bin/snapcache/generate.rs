//! `snapcache completions SHELL` and `snapcache man`: generated from the
//! clap definition, so they never drift from the real options.

use clap::CommandFactory;

use crate::output::record;
use crate::{Cli, Failure};

/// The shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write the script for
    shell: Shell,
}

/// Writes the completion script for the shell on stdout.
pub fn completions(args: &CompletionsArgs) -> Result<(), Failure> {
    use clap_complete::Shell as S;
    let shell = match args.shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
        Shell::Powershell => S::PowerShell,
        Shell::Elvish => S::Elvish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "snapcache", &mut buf);
    write_stdout(&buf);
    Ok(())
}

/// Writes the man page (roff) on stdout.
pub fn man() -> Result<(), Failure> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut buf)
        .map_err(|e| Failure::Other(format!("could not render the man page: {e}")))?;
    write_stdout(&buf);
    Ok(())
}

fn write_stdout(bytes: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    record(out.write_all(bytes).and_then(|()| out.flush()));
}
