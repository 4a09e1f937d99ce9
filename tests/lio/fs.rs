//! The kernel's filesystem ([`RealFs`]) reads a directory's files through one handle on
//! it; on a real directory those reads give what reads by whole path give ([`ByPath`]),
//! file modes, odd bytes, links and errors included. (On configfs itself the contract
//! suite compares them: `contract::reads_through_a_handle_are_reads_by_path`.)

use std::os::unix::fs::PermissionsExt;

use sbps_marshal::lio::fs::{Fs, RealFs};
use sbps_testkit::ByPath;

use crate::support::{owner_rw, read_each, Answer};

#[test]
fn reads_through_a_handle_give_what_reads_by_path_give() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let big = "7".repeat(9000);
    for (name, mode, text) in [
        ("b_ro", 0o444, "read only\n"),
        ("a_rw", 0o644, "1\n"),
        ("c_owner", 0o600, "x"),
        ("d_wo", 0o200, "write only"),
        ("e_big", 0o644, big.as_str()),
    ] {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::write(d.join("f_bad_utf8"), b"\xffok").unwrap();
    std::fs::create_dir(d.join("wwn")).unwrap();
    std::fs::write(
        d.join("wwn/vpd_unit_serial"),
        "T10 VPD Unit Serial Number: x\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(d.join("a_rw"), d.join("g_link")).unwrap();

    // The owner's read-write regular files, by name: not the read-only or write-only
    // ones, the directory or the link.
    let want: Vec<(String, Answer<String>)> = [
        ("a_rw", "1\n"),
        ("c_owner", "x"),
        ("e_big", big.as_str()),
        ("f_bad_utf8", "\u{fffd}ok"),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), Ok(t.to_string())))
    .collect();
    assert_eq!(owner_rw(&RealFs, d), Ok(want.clone()));
    assert_eq!(owner_rw(&ByPath(RealFs), d), Ok(want));

    // Named files, a path under the directory and a link among them; each error its own.
    let names = ["wwn/vpd_unit_serial", "missing", "wwn", "b_ro", "g_link"];
    let got = read_each(&RealFs, d, &names).unwrap();
    assert_eq!(Ok(got.clone()), read_each(&ByPath(RealFs), d, &names));
    assert_eq!(got[0].as_deref(), Ok("T10 VPD Unit Serial Number: x\n"));
    assert_eq!(got[1], Err(Some(libc::ENOENT)));
    assert_eq!(got[2], Err(Some(libc::EISDIR)));
    assert_eq!(got[4].as_deref(), Ok("1\n"));

    // A directory that is not there is the answer's error.
    let gone = d.join("gone");
    for fs in [&RealFs as &dyn Fs, &ByPath(RealFs)] {
        assert_eq!(owner_rw(fs, &gone).err(), Some(Some(libc::ENOENT)));
        assert_eq!(read_each(fs, &gone, &names).err(), Some(Some(libc::ENOENT)));
    }
}
