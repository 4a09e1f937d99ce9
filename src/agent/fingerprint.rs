//! What LIO held when saveconfig.json was last written, as a digest: a steady scan
//! compares the kernel's state with it and skips the save, without the agent keeping a
//! second copy of the whole observation (thousands of backstores) between scans.

#![warn(unreachable_pub)]

use sha2::{Digest, Sha256};

use crate::lio::Actual;

/// The SHA-256 of an [`Actual`]'s JSON encoding. Equal fingerprints mean equal states
/// (the encoding is canonical: vectors in order, sets and maps sorted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of `actual`; `None` when it cannot be encoded (then nothing is
    /// known to be saved, and the next scan saves).
    pub fn of(actual: &Actual) -> Option<Fingerprint> {
        let mut w = HashWriter(Sha256::new());
        serde_json::to_writer(&mut w, actual).ok()?;
        Some(Fingerprint(w.0.finalize().into()))
    }
}

/// Feeds the encoding to the hash as it is written: nothing is held whole.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lio::{Backstore, BackstoreRef};

    fn backstore(name: &str, serial: &str) -> Backstore {
        Backstore {
            at: BackstoreRef::fileio(0, name),
            dev: Some(format!("/var/lib/cps-local/boot-images/{name}/rootfs").into()),
            size: Some(4096),
            serial: Some(serial.into()),
            enabled: true,
            write_back: false,
        }
    }

    #[test]
    fn equal_states_only() {
        let a = Actual {
            backstores: vec![backstore("a", "s1"), backstore("b", "s2")],
            ..Actual::default()
        };
        let mut b = a.clone();
        assert_eq!(Fingerprint::of(&a), Fingerprint::of(&b));
        b.backstores[1].serial = Some("s3".into());
        assert_ne!(Fingerprint::of(&a), Fingerprint::of(&b));
        b.backstores[1].serial = Some("s2".into());
        b.hbas.insert(("fileio".into(), 1));
        assert_ne!(Fingerprint::of(&a), Fingerprint::of(&b));
        assert!(Fingerprint::of(&Actual::default()).is_some());
    }
}
