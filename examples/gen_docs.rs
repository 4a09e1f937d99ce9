//! Generates the man pages and shell completions the RPM ships, from the command
//! line's own definition (so they cannot drift from `--help`):
//!
//!     cargo run --example gen_docs -- OUT_DIR
//!
//! writes `OUT_DIR/man/sbps-marshal.1` (and one page per subcommand,
//! `sbps-marshal-<command>.1`), `OUT_DIR/completions/sbps-marshal.bash` and
//! `OUT_DIR/completions/_sbps-marshal` (zsh). A build step, not part of the
//! shipped binary. `packaging/build-rpm` runs it; CI checks the package carries
//! exactly what it generates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gen_docs OUT_DIR");
        return ExitCode::from(2);
    };
    match generate(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_docs: {e}");
            ExitCode::from(1)
        }
    }
}

fn generate(out: &std::path::Path) -> std::io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cmd = sbps_marshal::cli::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "sbps-marshal", &completions)?;
    }
    Ok(())
}
