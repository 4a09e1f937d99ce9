//! The binary: parse the command line, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sbps_marshal::cli::main(sbps_marshal::cli::Cli::parse())
}
