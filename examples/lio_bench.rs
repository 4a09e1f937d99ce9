//! Benchmark of the configfs backend on a real kernel: create and then remove N
//! backstores + LUNs through `lio::apply`, serially and in parallel.
//!
//! Run in the test VM with `tests/vm/run-bench [N] [PARALLELISM...]`, or on a host
//! with LIO loaded: `SBPS_LIO_CONFIGFS=/sys/kernel/config/target lio_bench 500 1 8`.
//! It creates its own target `iqn.2023-06.csm.iscsi:bench` and removes it again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sbps_marshal::lio::{self, BackstoreRef, ConfigfsSettings, ConfigfsTarget, Op, Target};

const IQN: &str = "iqn.2023-06.csm.iscsi:bench";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(500);
    let pars: Vec<usize> = if args.len() > 1 {
        args[1..]
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?
    } else {
        vec![1, 8]
    };
    let root = PathBuf::from(
        std::env::var_os("SBPS_LIO_CONFIGFS").unwrap_or_else(|| "/sys/kernel/config/target".into()),
    );
    let work = tempfile::Builder::new().prefix("sbps-bench-").tempdir()?;
    let images = work.path().join("images");
    std::fs::create_dir(&images)?;
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let p = images.join(format!("img{i:05}.squashfs"));
        std::fs::File::create(&p)?.set_len(4096)?;
        paths.push(p);
    }
    for d in [
        "iscsi".to_string(),
        format!("iscsi/{IQN}"),
        format!("iscsi/{IQN}/tpgt_1"),
    ] {
        match std::fs::create_dir(root.join(d)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e.into()),
            _ => {}
        }
    }
    let t = ConfigfsTarget::real(ConfigfsSettings {
        root: root.clone(),
        iqn: IQN.into(),
        tag: 1,
        mount_root: images.clone(),
        lock_dir: Some(work.path().to_path_buf()),
        lock_timeout: sbps_marshal::lio::lock::DEFAULT_TIMEOUT,
    });
    println!("lio_bench: {n} backstores + LUNs, kernel {}", kernel());
    println!(
        "{:>11} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "parallelism", "create SOs", "map LUNs", "unmap LUNs", "delete SOs", "observe"
    );
    for &par in &pars {
        let creates: Vec<Op> = (0..n)
            .map(|i| Op::CreateBackstore {
                at: at(i),
                path: paths[i].clone(),
                size: 4096,
                serial: format!("{:031x}", 0xb0000 + i),
            })
            .collect();
        let maps: Vec<Op> = (0..n)
            .map(|i| Op::MapLun {
                lun: i as u64 + 1,
                at: at(i),
                alias: format!("a{i}"),
            })
            .collect();
        let unmaps: Vec<Op> = (0..n)
            .map(|i| Op::UnmapLun {
                lun: i as u64 + 1,
                serial: None,
            })
            .collect();
        let deletes: Vec<Op> = (0..n).map(|i| Op::DeleteBackstore { at: at(i) }).collect();
        let _guard = t.lock()?;
        let c = timed(&t, &creates, par)?;
        let m = timed(&t, &maps, par)?;
        let o0 = Instant::now();
        let seen = t.observe()?;
        let o = o0.elapsed();
        anyhow::ensure!(
            seen.backstores.len() >= n,
            "observed {} backstores",
            seen.backstores.len()
        );
        let u = timed(&t, &unmaps, par)?;
        let d = timed(&t, &deletes, par)?;
        println!(
            "{par:>11} {:>12} {:>12} {:>12} {:>12} {:>10}",
            fmt(c, n),
            fmt(m, n),
            fmt(u, n),
            fmt(d, n),
            format!("{:.2}s", o.as_secs_f64())
        );
        println!(
            "{:>11} create total {:.1}s, remove total {:.1}s",
            "",
            (c + m).as_secs_f64(),
            (u + d).as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir(root.join(format!("iscsi/{IQN}/tpgt_1")));
    let _ = std::fs::remove_dir(root.join(format!("iscsi/{IQN}")));
    Ok(())
}

fn at(i: usize) -> BackstoreRef {
    BackstoreRef::fileio(i as u32, &format!("bench{i:05}"))
}

fn timed(t: &dyn Target, ops: &[Op], par: usize) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let res = lio::apply(t, ops, par);
    let el = t0.elapsed();
    if let Some(r) = res.iter().find(|r| r.result.is_err()) {
        anyhow::bail!("{}: {:?}", r.op, r.result);
    }
    Ok(el)
}

fn fmt(d: Duration, n: usize) -> String {
    format!(
        "{:.2}s {:>4.1}ms",
        d.as_secs_f64(),
        d.as_secs_f64() * 1000.0 / n as f64
    )
}

fn kernel() -> String {
    std::fs::read_to_string(Path::new("/proc/sys/kernel/osrelease"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
