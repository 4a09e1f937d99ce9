//! What the LIO suites stand on: the test kit's rig (a target on the fake configfs or
//! the kernel's, set up and torn down) and its helpers.

pub use sbps_testkit::rig::*;

use std::path::Path;

use sbps_marshal::lio::fs::Fs;

/// An answer with its error as its errno: what two `Fs` are compared by, answer for
/// answer (an `io::Error` itself cannot be compared).
pub type Answer<T> = Result<T, Option<i32>>;

pub fn answer<T>(r: std::io::Result<T>) -> Answer<T> {
    r.map_err(|e| e.raw_os_error())
}

/// [`Fs::read_owner_rw`] of `dir`, as answers.
pub fn owner_rw(fs: &dyn Fs, dir: &Path) -> Answer<Vec<(String, Answer<String>)>> {
    let files = answer(fs.read_owner_rw(dir))?;
    Ok(files.into_iter().map(|(n, t)| (n, answer(t))).collect())
}

/// [`Fs::read_each`] of `names` in `dir`, as answers.
pub fn read_each(fs: &dyn Fs, dir: &Path, names: &[&str]) -> Answer<Vec<Answer<String>>> {
    Ok(answer(fs.read_each(dir, names))?
        .into_iter()
        .map(answer)
        .collect())
}
