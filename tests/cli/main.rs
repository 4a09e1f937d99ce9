//! The binary as an operator meets it: its flags and help (`usage`), its settings
//! (`config`), the daemon's signals, lock and endpoints (`daemon`), what it writes to
//! the journal (`journal`), and what monitoring reads (`monitoring`: alert rules,
//! dashboard, textfile).

mod config;
mod daemon;
mod journal;
mod monitoring;
mod support;
mod usage;
