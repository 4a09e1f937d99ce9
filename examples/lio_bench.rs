//! Benchmark of the configfs backend on a real kernel: create and then remove N
//! backstores + LUNs through `lio::apply`, serially and in parallel; in between, what
//! a scan costs the kernel side at that size: the first save of saveconfig.json (a
//! whole dump), a whole observation (a fresh backend), a steady scan's observation
//! (the backend that observed before) and one change (one more image created,
//! mapped, read back and saved: the patched file), three times, the first and the
//! best printed (the steady observation is the best of three too).
//!
//! Run in the test VM with `tests/vm/run-bench [N] [PARALLELISM...]`, or on a host
//! with LIO loaded: `SBPS_LIO_CONFIGFS=/sys/kernel/config/target lio_bench 500 1 8`.
//! It creates its own target `iqn.2023-06.csm.iscsi:bench` and removes it again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sbps_marshal::lio::fs::{Fs, RealFs};
use sbps_marshal::lio::{
    self, Actual, BackstoreRef, ConfigfsSettings, ConfigfsTarget, Op, OpResult, Target,
};
use sbps_testkit::ByPath;

const IQN: &str = "iqn.2023-06.csm.iscsi:bench";
/// How many times one change is made (and timed) after the steady observation.
const CHANGES: usize = 3;

// The agent's allocator, as the binary installs it (`sbps_marshal::allocator`).
#[global_allocator]
static GLOBAL: sbps_marshal::allocator::Jemalloc = sbps_marshal::allocator::Jemalloc;
sbps_marshal::malloc_conf!();

fn main() -> anyhow::Result<()> {
    // Where a save's time goes (`SBPS_BENCH_LOG` to choose other targets).
    let filter = std::env::var("SBPS_BENCH_LOG").unwrap_or_else(|_| {
        "sbps_marshal::lio::saved=debug,sbps_marshal::lio::savefile=debug".into()
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stdout)
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .init();
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
    // N, then the images of the one changes.
    let mut paths = Vec::with_capacity(n + CHANGES);
    for i in 0..n + CHANGES {
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
    let settings = ConfigfsSettings {
        root: root.clone(),
        iqn: IQN.into(),
        tag: 1,
        mount: images.clone(),
        lock_dir: Some(work.path().to_path_buf()),
        lock_timeout: sbps_marshal::lio::lock::DEFAULT_TIMEOUT,
    };
    let save = work.path().join("saveconfig.json");
    println!("lio_bench: {n} backstores + LUNs, kernel {}", kernel());
    println!(
        "{:>11} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "parallelism", "create SOs", "map LUNs", "unmap LUNs", "delete SOs", "observe"
    );
    for &par in &pars {
        // A fresh backend per round, as a fresh agent process: nothing remembered.
        let t = ConfigfsTarget::real(settings.clone());
        let _ = std::fs::remove_file(&save);
        // Nor backups: a round's first file would be the newest backup's very text, and
        // a save then compares them instead of backing up, as no agent's save does.
        let _ = std::fs::remove_dir_all(work.path().join("backup"));
        let creates: Vec<Op> = (0..n).map(|i| create(i, &paths)).collect();
        let maps: Vec<Op> = (0..n).map(map).collect();
        let unmaps: Vec<Op> = (0..n + CHANGES)
            .map(|i| Op::UnmapLun {
                lun: i as u64 + 1,
                serial: None,
            })
            .collect();
        let deletes: Vec<Op> = (0..n + CHANGES)
            .map(|i| Op::DeleteBackstore { at: at(i) })
            .collect();
        let guard = t.lock()?;
        // Cold apply: observe the empty target, create and map N, read back, save.
        let before = t.observe()?;
        let (c, mut made) = timed(&t, &creates, par)?;
        let (m, mapped) = timed(&t, &maps, par)?;
        made.extend(mapped);
        let (after, cold_save) = persist(&t, before, &made, &save)?;
        let size = std::fs::metadata(&save)?.len();
        anyhow::ensure!(
            after.backstores.len() >= n,
            "observed {} backstores after applying",
            after.backstores.len()
        );
        let reads = attribute_reads(&root)?;
        // A whole observation: a backend that remembers nothing (a restarted agent); it
        // takes the locks itself, so ours are let go meanwhile.
        drop(guard);
        let o0 = Instant::now();
        let seen = ConfigfsTarget::real(settings.clone()).observe()?;
        let o = o0.elapsed();
        let guard = t.lock()?;
        anyhow::ensure!(
            seen.backstores.len() >= n,
            "observed {} backstores",
            seen.backstores.len()
        );
        // A steady scan's kernel side: the observation (best of 3); nothing to save.
        let mut steady = Duration::MAX;
        let mut actual = after;
        for _ in 0..3 {
            let s0 = Instant::now();
            actual = t.observe()?;
            steady = steady.min(s0.elapsed());
        }
        anyhow::ensure!(
            actual == seen,
            "the steady observation differs from a whole one"
        );
        // One change: image N created and mapped, read back, saveconfig.json patched;
        // then N + 1 and N + 2. Each is (apply, read back, save).
        let mut changes = Vec::with_capacity(CHANGES);
        for i in n..n + CHANGES {
            let one = [create(i, &paths), map(i)];
            let (a1, applied) = timed(&t, &one, par)?;
            let (next, (r, s)) = persist(&t, actual, &applied, &save)?;
            actual = next;
            changes.push([a1, r, s]);
        }
        let u = timed(&t, &unmaps, par)?.0;
        let d = timed(&t, &deletes, par)?.0;
        drop(guard);
        println!(
            "{par:>11} {:>12} {:>12} {:>12} {:>12} {:>10}",
            fmt(c, n),
            fmt(m, n),
            fmt(u, n + CHANGES),
            fmt(d, n + CHANGES),
            format!("{:.2}s", o.as_secs_f64())
        );
        println!(
            "{:>11} create total {:.1}s, remove total {:.1}s",
            "",
            (c + m).as_secs_f64(),
            (u + d).as_secs_f64()
        );
        println!(
            "{:>11} cold: read back {:.2}s, first save (whole dump, {} bytes) {:.2}s",
            "",
            cold_save.0.as_secs_f64(),
            size,
            cold_save.1.as_secs_f64()
        );
        println!(
            "{:>11} attribute files, by path / through a handle: {reads}",
            ""
        );
        println!(
            "{:>11} steady observe {:.1} ms (whole observe {:.1} ms)",
            "",
            ms(steady),
            ms(o)
        );
        let total = |c: &[Duration; 3]| steady + c.iter().sum::<Duration>();
        let best = changes
            .iter()
            .min_by_key(|c| total(c))
            .unwrap_or(&changes[0]);
        for (what, c) in [
            ("one change, first", &changes[0]),
            ("one change, best", best),
        ] {
            println!(
                "{:>11} {what}: apply {:.1} ms, read back {:.1} ms, save (patched) {:.1} ms, total {:.1} ms (steady + {:.1})",
                "",
                ms(c[0]),
                ms(c[1]),
                ms(c[2]),
                ms(total(c)),
                ms(total(c) - steady)
            );
        }
    }
    let _ = std::fs::remove_dir(root.join(format!("iscsi/{IQN}/tpgt_1")));
    let _ = std::fs::remove_dir(root.join(format!("iscsi/{IQN}")));
    Ok(())
}

fn at(i: usize) -> BackstoreRef {
    BackstoreRef::fileio(i as u32, &format!("bench{i:05}"))
}

fn create(i: usize, paths: &[PathBuf]) -> Op {
    Op::CreateBackstore {
        at: at(i),
        path: paths[i].clone(),
        size: 4096,
        serial: format!("{:031x}", 0xb0000 + i),
    }
}

fn map(i: usize) -> Op {
    Op::MapLun {
        lun: i as u64 + 1,
        at: at(i),
        alias: format!("a{i}"),
    }
}

fn timed(t: &dyn Target, ops: &[Op], par: usize) -> anyhow::Result<(Duration, Vec<OpResult>)> {
    let t0 = Instant::now();
    let res = lio::apply(t, ops, par);
    let el = t0.elapsed();
    if let Some(r) = res.iter().find(|r| r.result.is_err()) {
        anyhow::bail!("{}: {:?}", r.op, r.result);
    }
    Ok((el, res))
}

/// What a scan does after applying: read back what the ops made, then write
/// saveconfig.json. Returns the state and the two durations.
fn persist(
    t: &dyn Target,
    before: Actual,
    applied: &[OpResult],
    save: &Path,
) -> anyhow::Result<(Actual, (Duration, Duration))> {
    let t0 = Instant::now();
    let after = t.observe_after(before, applied)?;
    let r = t0.elapsed();
    let t1 = Instant::now();
    anyhow::ensure!(t.save_config(save)?, "saveconfig.json not written");
    Ok((after, (r, t1.elapsed())))
}

/// What reading the attribute files of a dump costs by path (the trait's defaults, as
/// the fakes read) and through one handle on the directory (`RealFs`), best of 5 each:
/// the first storage object's `attrib/`, the TPG's `attrib/` and `param/`.
fn attribute_reads(root: &Path) -> anyhow::Result<String> {
    let dirs = [
        ("SO attrib", root.join("core/fileio_0/bench00000/attrib")),
        (
            "TPG attrib",
            root.join(format!("iscsi/{IQN}/tpgt_1/attrib")),
        ),
        ("TPG param", root.join(format!("iscsi/{IQN}/tpgt_1/param"))),
    ];
    let mut out = Vec::new();
    for (what, dir) in &dirs {
        let mut best = [Duration::MAX; 2];
        let mut files = 0;
        for _ in 0..5 {
            for (i, fs) in [&ByPath(RealFs) as &dyn Fs, &RealFs]
                .into_iter()
                .enumerate()
            {
                let t0 = Instant::now();
                files = fs.read_owner_rw(dir)?.len();
                best[i] = best[i].min(t0.elapsed());
            }
        }
        out.push(format!(
            "{what} ({files}) {:.2} / {:.2} ms",
            ms(best[0]),
            ms(best[1])
        ));
    }
    Ok(out.join(", "))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
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
