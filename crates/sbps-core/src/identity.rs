//! Image identity: the key an image is known by, and the LIO names derived from it.
//!
//! Compute nodes find their image by the SCSI identity the target presents, which
//! is a pure function of the key. These derivations must stay bit-for-bit what the
//! original agent computed, or a node that boots after the switch cannot find its
//! root filesystem:
//!
//! * backstore name (also the SCSI product id through `emulate_model_alias`):
//!   `sha224(key)` in lowercase hex, first 15 characters;
//! * VPD unit serial (`wwn/vpd_unit_serial`): the first 31 characters;
//! * the WWID the initiator's udev shows: `36001405` + the first 25 characters,
//!   because the kernel builds the NAA-6 designator from company id `0x001405`
//!   and the first 25 hex digits of the serial.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha224};

/// Length of the backstore name (the SCSI INQUIRY product field holds 15 characters).
pub(crate) const NAME_LEN: usize = 15;
/// Length of the VPD unit serial the original agent wrote.
pub(crate) const SERIAL_LEN: usize = 31;
/// Hex digits of the serial the kernel folds into the NAA-6 designator.
pub(crate) const WWID_SERIAL_DIGITS: usize = 25;
/// Prefix of every WWID an LIO target produces: SCSI name type 3, NAA 6, IEEE company id 001405.
pub(crate) const WWID_PREFIX: &str = "36001405";

/// The key of a programming-environment object: `s3://<bucket>/<object key>`.
///
/// The ETag is deliberately not part of it (the original never included it), so a
/// re-upload under the same key keeps its identity; see `desired` for how such a
/// content change is detected.
pub fn pe_key(bucket: &str, object_key: &str) -> String {
    format!("s3://{bucket}/{object_key}")
}

/// The key of an IMS rootfs image: `<rootfs link.path>|<rootfs link.etag>`, exactly
/// what BOS puts on the kernel command line (`root=sbps-s3:<path>:<etag>:…`).
pub fn rootfs_key(link_path: &str, etag: &str) -> String {
    format!("{link_path}|{etag}")
}

/// The SCSI identity of one image, derived from its key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// Backstore name, 15 lowercase hex characters.
    pub name: String,
    /// VPD unit serial, 31 lowercase hex characters.
    pub serial: String,
}

impl Identity {
    /// Derives the identity of `key`.
    pub fn of_key(key: &str) -> Identity {
        let digest = hex::encode(Sha224::digest(key.as_bytes()));
        Identity {
            name: digest[..NAME_LEN].to_string(),
            serial: digest[..SERIAL_LEN].to_string(),
        }
    }

    /// The WWID an initiator sees for this image (`/dev/disk/by-id/scsi-<wwid>`, `multipath -ll`).
    pub fn wwid(&self) -> String {
        wwid_of_serial(&self.serial)
    }
}

/// The WWID the kernel derives from a unit serial: only hex digits count, at most 25 of them,
/// zero-padded (`spc_gen_naa_6h_vendor_specific`).
pub fn wwid_of_serial(serial: &str) -> String {
    let mut digits: String = serial
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(WWID_SERIAL_DIGITS)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    while digits.len() < WWID_SERIAL_DIGITS {
        digits.push('0');
    }
    format!("{WWID_PREFIX}{digits}")
}

/// True when `s` looks like a name this agent (or the original) would have derived:
/// 15 lowercase hex characters.
pub(crate) fn is_derived_name(s: &str) -> bool {
    s.len() == NAME_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_pe_vectors() {
        let base = Identity::of_key(&pe_key("boot-images", "PE/CPE-base.x86_64-24.11.squashfs"));
        assert_eq!(base.name, "de4cc04e7dacfb9");
        assert_eq!(base.wwid(), "36001405de4cc04e7dacfb9ada0a6b4cc");
        assert_eq!(base.serial.len(), SERIAL_LEN);
        assert!(base.serial.starts_with(&base.name));

        let amd = Identity::of_key("s3://boot-images/PE/CPE-amd.x86_64-23.12.squashfs");
        assert_eq!(amd.name, "a50dd52157e1636");
        let intel = Identity::of_key("s3://boot-images/PE/CPE-intel.x86_64-25.03.squashfs");
        assert_eq!(intel.name, "602f57d78f7162d");
    }

    #[test]
    fn rootfs_key_matches_independent_digest() {
        let key = rootfs_key(
            "s3://boot-images/4fab0408-8b5e-4d4c-9c3c-6f1b2d7c1e11/rootfs",
            "b6ea7a2314d54dead0c94223863b3488-1977",
        );
        assert_eq!(
            key,
            "s3://boot-images/4fab0408-8b5e-4d4c-9c3c-6f1b2d7c1e11/rootfs|b6ea7a2314d54dead0c94223863b3488-1977"
        );
        // Digest computed independently (Python: hashlib.sha224(key.encode()).hexdigest()).
        let expected = independent_sha224_hex(&key);
        let id = Identity::of_key(&key);
        assert_eq!(id.name, expected[..15]);
        assert_eq!(id.serial, expected[..31]);
        assert_eq!(id.wwid(), format!("36001405{}", &expected[..25]));
    }

    #[test]
    fn wwid_skips_non_hex_like_the_kernel() {
        // Observed on kernel 6.1: serial-img1-0001 -> NAA 6001405 ea10001 + zero padding.
        assert_eq!(
            wwid_of_serial("serial-img1-0001"),
            "36001405ea10001000000000000000000"
        );
    }

    #[test]
    fn derived_names() {
        assert!(is_derived_name("de4cc04e7dacfb9"));
        assert!(!is_derived_name("img1"));
        assert!(!is_derived_name("DE4CC04E7DACFB9"));
    }

    /// A second, deliberately separate SHA-224 so the golden test does not merely
    /// compare the code with itself: FIPS 180-4, written out plainly.
    fn independent_sha224_hex(msg: &str) -> String {
        const K: [u32; 64] = [
            0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
            0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
            0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
            0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
            0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
            0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
            0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
            0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
            0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
            0xc67178f2,
        ];
        let mut h: [u32; 8] = [
            0xc1059ed8, 0x367cd507, 0x3070dd17, 0xf70e5939, 0xffc00b31, 0x68581511, 0x64f98fa7,
            0xbefa4fa4,
        ];
        let mut data = msg.as_bytes().to_vec();
        let bit_len = (data.len() as u64) * 8;
        data.push(0x80);
        while data.len() % 64 != 56 {
            data.push(0);
        }
        data.extend_from_slice(&bit_len.to_be_bytes());
        for block in data.chunks(64) {
            let mut w = [0u32; 64];
            for i in 0..16 {
                w[i] = u32::from_be_bytes([
                    block[4 * i],
                    block[4 * i + 1],
                    block[4 * i + 2],
                    block[4 * i + 3],
                ]);
            }
            for i in 16..64 {
                let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
                let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16]
                    .wrapping_add(s0)
                    .wrapping_add(w[i - 7])
                    .wrapping_add(s1);
            }
            let mut v = h;
            for i in 0..64 {
                let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
                let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
                let t1 = v[7]
                    .wrapping_add(s1)
                    .wrapping_add(ch)
                    .wrapping_add(K[i])
                    .wrapping_add(w[i]);
                let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
                let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
                let t2 = s0.wrapping_add(maj);
                v = [
                    t1.wrapping_add(t2),
                    v[0],
                    v[1],
                    v[2],
                    v[3].wrapping_add(t1),
                    v[4],
                    v[5],
                    v[6],
                ];
            }
            for i in 0..8 {
                h[i] = h[i].wrapping_add(v[i]);
            }
        }
        h[..7].iter().map(|x| format!("{x:08x}")).collect()
    }
}
