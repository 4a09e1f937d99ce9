//! Builds a saved configuration into a configfs as `targetctl restore` would: the
//! contract suite stands up a targetcli-built target with it, on the fake or the kernel.

use std::path::Path;

use sbps_marshal::lio::fs::Fs;
use sbps_marshal::lio::saveconfig::Saved;
use sbps_marshal::lio::LioError;
use serde_json::Value;

/// Builds `saved` into the configfs at `root` the way `targetctl restore` would
/// (fileio objects in HBAs 0, 1, … as in [`Saved::to_actual`]; attributes and
/// parameters best effort). Used by tests to stand up a targetcli-built target.
pub fn materialize<F: Fs + ?Sized>(fs: &F, root: &Path, saved: &Saved) -> Result<(), LioError> {
    let mkdir = |p: &Path| match fs.mkdir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(LioError::from_io("mkdir", p, e)),
    };
    let write = |p: &Path, v: &str| fs.write(p, v).map_err(|e| LioError::from_io("write", p, e));
    let actual = saved.to_actual("", 0);
    for (o, bs) in saved.objects.iter().zip(&actual.backstores) {
        if o.plugin != "fileio" {
            continue;
        }
        let hba = root.join("core").join(bs.at.hba_dir());
        mkdir(&hba)?;
        let so = hba.join(&o.name);
        mkdir(&so)?;
        let dev = o.dev.clone().unwrap_or_default();
        let mut control = format!("fd_dev_name={dev},fd_dev_size={}", o.size.unwrap_or(0));
        if o.write_back {
            control.push_str(",fd_buffered_io=1");
        }
        write(&so.join("control"), &control)?;
        write(&so.join("udev_path"), &dev)?;
        if let Some(w) = &o.wwn {
            write(&so.join("wwn").join("vpd_unit_serial"), w)?;
        }
        write(&so.join("enable"), "1")?;
        for (k, v) in &o.attributes {
            let v = match v {
                Value::String(x) => x.clone(),
                other => other.to_string(),
            };
            if let Err(e) = fs.write(&so.join("attrib").join(k), &v) {
                tracing::debug!(attribute = %k, error = %e, "restore: attribute not set");
            }
        }
    }
    for t in saved.targets.iter().filter(|t| t.fabric == "iscsi") {
        let td = root.join("iscsi").join(&t.wwn);
        mkdir(&root.join("iscsi"))?;
        mkdir(&td)?;
        for g in &t.tpgs {
            let gd = td.join(format!("tpgt_{}", g.tag));
            mkdir(&gd)?;
            for (k, v) in &g.attributes {
                let v = match v {
                    Value::String(x) => x.clone(),
                    other => other.to_string(),
                };
                if let Err(e) = fs.write(&gd.join("attrib").join(k), &v) {
                    tracing::debug!(attribute = %k, error = %e, "restore: TPG attribute not set");
                }
            }
            for l in &g.luns {
                let Some(at) = l.object.as_ref().and_then(|(p, n)| {
                    actual
                        .backstores
                        .iter()
                        .find(|b| &b.at.plugin == p && &b.at.name == n)
                }) else {
                    continue;
                };
                let ld = gd.join("lun").join(format!("lun_{}", l.index));
                mkdir(&ld)?;
                let alias = l.alias.clone().unwrap_or_else(|| format!("lun{}", l.index));
                let target = root.join("core").join(at.at.hba_dir()).join(&at.at.name);
                fs.symlink(&target, &ld.join(alias))
                    .map_err(|e| LioError::from_io("link", &ld, e))?;
            }
            for (ip, port) in &g.portals {
                let name = if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                };
                mkdir(&gd.join("np").join(name))?;
            }
            write(&gd.join("enable"), if g.enable { "1" } else { "0" })?;
        }
    }
    Ok(())
}
