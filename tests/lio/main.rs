//! The LIO backends against the kernel's contract, one module per room: the configfs
//! backend's contract (`contract`, on the fake configfs and, in the VM, the kernel's),
//! the kernel filesystem's reads through a directory handle (`fs`), saveconfig.json
//! patched as the full dump (`saveconfig_patch`), rtslib restoring our
//! saveconfig.json (`restore`, VM only) and the targetcli backend (`targetcli`).
//!
//! The VM suites run this binary filtered by module: `tests/vm/run-contract` runs
//! `contract::`, `run-restore` `restore::`, `run-targetcli` `targetcli::`.

mod contract;
mod fs;
mod restore;
mod saveconfig_patch;
mod support;
mod targetcli;
