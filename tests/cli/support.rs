//! The scratch node the binary runs on in these tests: a configfs-shaped tree with the
//! provisioned target (TPG disabled), an empty mount, and the settings of an agent
//! whose sources are all down (nothing listens on port 9, the SPIRE CLI fails), which
//! is also the case the agent must survive: it keeps running, changes nothing, says why.

use std::path::Path;
use std::process::Command;

pub const IQN: &str = "iqn.2023-06.csm.iscsi:ncn-w001";

/// Lays the scratch node out under `root`: the target's TPG (disabled) with the LUN
/// directories `luns`, configfs's `core`, the mount `mnt`, and the directories `dirs`.
pub fn scratch_node(root: &Path, luns: &[&str], dirs: &[&str]) {
    let tpg = root.join(format!("configfs/iscsi/{IQN}/tpgt_1"));
    std::fs::create_dir_all(tpg.join("lun")).unwrap();
    for lun in luns {
        std::fs::create_dir_all(tpg.join("lun").join(lun)).unwrap();
    }
    std::fs::create_dir_all(root.join("configfs/core")).unwrap();
    std::fs::write(tpg.join("enable"), "0\n").unwrap();
    for d in ["mnt"].iter().chain(dirs) {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
}

/// The binary with `args`, a clean environment, no configuration file, and the
/// offline agent's settings for the node under `root`; `overrides` replace or add
/// settings (keys without the `SBPS_MARSHAL_` prefix).
pub fn agent(root: &Path, args: &[&str], overrides: &[(&str, String)]) -> Command {
    let d = |rel: &str| root.join(rel).display().to_string();
    let mut settings: Vec<(&str, String)> = vec![
        ("CONFIGFS_ROOT", d("configfs")),
        ("S3_PROTO", "http".into()),
        ("S3_HOST", "127.0.0.1:9".into()),
        ("S3_CREDENTIAL_FILE", d("creds")),
        ("API_GATEWAY", "http://127.0.0.1:9".into()),
        ("SPIRE_AGENT_PATH", "/bin/false".into()),
        ("NODE_LABEL", String::new()),
        ("NODE_NAME", "ncn-w001".into()),
        ("STATE_DIR", d("state")),
        ("LOCK_FILE", d("run/sbps-marshal.lock")),
        ("RTSLIB_LOCK_DIR", d("run")),
        ("LIO_SAVE_FILE", d("saveconfig.json")),
        ("SQUASHFS_S3FS_MOUNT", d("mnt")),
        ("TARGET_SERVICE", String::new()),
        ("METRICS_LISTEN", String::new()),
    ];
    for (k, v) in overrides {
        match settings.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v.clone(),
            None => settings.push((k, v.clone())),
        }
    }
    let mut c = Command::new(env!("CARGO_BIN_EXE_sbps-marshal"));
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["--config", "/dev/null"])
        .args(args);
    for (k, v) in settings {
        c.env(format!("SBPS_MARSHAL_{k}"), v);
    }
    c
}
