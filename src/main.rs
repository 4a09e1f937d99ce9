//! The binary: parse the command line, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

// jemalloc with the agent's options (`sbps_marshal::allocator`): both here, in the
// binary, so that the linker keeps them.
#[global_allocator]
static GLOBAL: sbps_marshal::allocator::Jemalloc = sbps_marshal::allocator::Jemalloc;
sbps_marshal::malloc_conf!();

fn main() -> ExitCode {
    sbps_marshal::cli::main(sbps_marshal::cli::Cli::parse())
}
