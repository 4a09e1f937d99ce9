//! Whole-scan benchmark: `Agent::scan_and_publish` over loopback doubles and the
//! fake configfs, for N images, in three states: cold (nothing projected), steady
//! (nothing to do, best of 5), one change (one new tagged image among N; best of 3
//! successive new images). The floor (the same requests, no processing) is a best of
//! 5 too, so that the steady scan is compared with it on equal terms.
//!
//! `cargo bench --bench scan` runs N = 100, 1,000 and 5,000 and prints a table and
//! PASS/MISS lines for the targets. Each N runs its agent twice, each time in a fresh
//! child process of this binary; the S3 and IMS doubles and the mount tree live in
//! the parent. The first child holds the fake kernel in process (its calls cost what
//! a function call costs: the timings); the second calls the fake kernel served by
//! the parent over a Unix socket (`sbps_testkit::remote_fs`), so that child's peak RSS
//! and heap are the agent's own. Under `cargo test` (no `--bench`) it runs one
//! N = 20 round of each as a smoke test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use sbps_marshal::agent::service::NoServices;
use sbps_marshal::agent::{wiring, Agent};
use sbps_marshal::allocator::Jemalloc;
use sbps_marshal::config::{Layers, Settings};
use sbps_marshal::identity::{self, Identity};
use sbps_marshal::inventory::gather::Sources;
use sbps_marshal::inventory::spire::{StaticToken, Token};
use sbps_marshal::lio::fs::Fs;
use sbps_marshal::lio::{ConfigfsSettings, ConfigfsTarget, Target};
use sbps_marshal::report::ScanReport;
use sbps_testkit::fixtures::{self, Fixture};
use sbps_testkit::ims::Ims;
use sbps_testkit::remote_fs::{self, Kernel, RemoteFs};
use sbps_testkit::s3::{Bucket, BUCKET, S3};
use sbps_testkit::serve::spawn;
use sbps_testkit::{FakeConfigfs, Recorder};
use serde_json::Value;

const PES: usize = 20;
const IQN: &str = "iqn.2023-06.csm.iscsi:bench";
const PORTAL: &str = "127.0.0.1:3260";
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ0In0.c2ln";
/// Where the fake configfs plays `/sys/kernel/config/target`.
const ROOT: &str = "/fake/sys/kernel/config/target";

// ---------------------------------------------------------- counting allocator

/// The agent's allocator (jemalloc with [`sbps_marshal::allocator::CONF`], as the
/// binary installs it), counting the bytes live and their peak since the last
/// [`heap_phase`]: which phase of a scan holds the most, in the agent's own terms
/// (the RSS adds the allocator's free lists, the binary and the thread stacks).
/// `SBPS_SCAN_BENCH_SYSTEM_MALLOC=1` counts over glibc's malloc instead, for the
/// comparison in BENCHMARKS.md.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// 0: not decided yet, 1: jemalloc, 2: glibc. Decided at the first allocation, from
/// the environment (read with libc: std's `env::var` allocates).
static SYSTEM: AtomicUsize = AtomicUsize::new(0);

/// The allocator counted over.
fn inner() -> &'static dyn GlobalAlloc {
    let system = match SYSTEM.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: getenv with a C string; the environment is not written concurrently
            // at the first allocation.
            let set = unsafe { !libc::getenv(c"SBPS_SCAN_BENCH_SYSTEM_MALLOC".as_ptr()).is_null() };
            SYSTEM.store(if set { 2 } else { 1 }, Ordering::Relaxed);
            set
        }
        v => v == 2,
    };
    if system {
        &System
    } else {
        &Jemalloc
    }
}

/// Whether [`inner`] is glibc's malloc (decided by the first allocation, long before).
fn system() -> bool {
    SYSTEM.load(Ordering::Relaxed) == 2
}

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { inner().alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { inner().alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { inner().dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { inner().realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                grew(new - l.size());
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;
sbps_marshal::malloc_conf!();

/// (peak, live) heap bytes in KiB since the last call; starts the next phase.
fn heap_phase() -> (u64, u64) {
    let live = LIVE.load(Ordering::Relaxed);
    let peak = PEAK.swap(live, Ordering::Relaxed);
    (peak as u64 / 1024, live as u64 / 1024)
}

/// The fake kernel with the target, TPG 1 and its portal (csm-config's part).
fn kernel() -> FakeConfigfs {
    let root = PathBuf::from(ROOT);
    let fake = FakeConfigfs::new(root.clone());
    let tpg = root.join(format!("iscsi/{IQN}/tpgt_1"));
    for d in [
        root.join("iscsi"),
        root.join(format!("iscsi/{IQN}")),
        tpg.clone(),
        tpg.join("np").join(PORTAL),
    ] {
        fake.mkdir(&d).unwrap();
    }
    for (a, v) in [
        ("authentication", "0"),
        ("generate_node_acls", "1"),
        ("demo_mode_write_protect", "1"),
        ("cache_dynamic_acls", "1"),
    ] {
        fake.write(&tpg.join("attrib").join(a), v).unwrap();
    }
    fake
}

/// What the benchmark asks of the kernel besides the agent's calls.
trait KernelCtl: Send + Sync {
    fn writes(&self) -> u64;
    fn start_recording(&self);
    fn take(&self) -> Vec<String>;
}

impl KernelCtl for Kernel {
    fn writes(&self) -> u64 {
        Recorder::writes(self) as u64
    }
    fn start_recording(&self) {
        Recorder::start_recording(self)
    }
    fn take(&self) -> Vec<String> {
        Recorder::take(self)
    }
}

impl KernelCtl for RemoteFs {
    fn writes(&self) -> u64 {
        RemoteFs::writes(self)
    }
    fn start_recording(&self) {
        RemoteFs::start_recording(self)
    }
    fn take(&self) -> Vec<String> {
        RemoteFs::take(self)
    }
}

// ---------------------------------------------------------------- parent side

/// The doubles of one N, shared with the control routes.
struct World {
    n: usize,
    store: Arc<Bucket>,
    ims: Arc<Ims>,
    records: RwLock<Vec<Value>>,
    mount: PathBuf,
    /// Images added so far by `/control/add`.
    added: std::sync::atomic::AtomicUsize,
}

/// `POST /control/add`: one new tagged image (index N, then N + 1, …) appears in IMS,
/// S3 and the mount.
async fn add(State(w): State<Arc<World>>) -> &'static str {
    let im = fixtures::image(w.n + w.added.fetch_add(1, Ordering::SeqCst), true);
    fixtures::write_mount(&w.mount, &im.objects).unwrap();
    w.store.extend(im.objects);
    let mut r = w.records.write().unwrap();
    r.push(im.record);
    w.ims.set(&r);
    "ok"
}

/// `GET /control/counts`: "S3-lists S3-gets IMS-requests objects".
async fn counts(State(w): State<Arc<World>>) -> String {
    format!(
        "{} {} {} {}",
        w.store.lists(),
        w.store.gets(),
        w.ims.hits(),
        w.store.len()
    )
}

/// Runs the scans of one N in a child: with the fake kernel in the child, or (when
/// `remote`) served from here.
fn run_n(rt: &tokio::runtime::Runtime, n: usize, verbose: bool, remote: bool) -> Vec<Row> {
    let mount = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let f = Fixture::new(n, PES);
    fixtures::write_mount(mount.path(), &f.objects).unwrap();
    let tagged = f.tagged();
    let store = Arc::new(Bucket::new(f.objects));
    let ims = Arc::new(Ims::default());
    ims.set(&f.records);
    let world = Arc::new(World {
        n,
        store: store.clone(),
        ims: ims.clone(),
        records: RwLock::new(f.records),
        mount: mount.path().to_path_buf(),
        added: Default::default(),
    });
    let (s3_url, ims_url) = rt.block_on(async {
        let s3 = spawn(S3::over(store).router()).await;
        let ims = spawn(
            ims.router().merge(
                Router::new()
                    .route("/control/add", post(add))
                    .route("/control/counts", get(counts))
                    .with_state(world.clone()),
            ),
        )
        .await;
        (s3, ims)
    });
    if verbose {
        eprintln!(
            "N={n}: fixture ({} objects, {tagged} tagged) in {:.1} s",
            store_len(&world),
            t.elapsed().as_secs_f64()
        );
    }
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = if remote {
        let root = PathBuf::from(ROOT);
        let k = Arc::new(Recorder::counting(kernel(), &root));
        remote_fs::serve(k, sock_dir.path()).display().to_string()
    } else {
        "-".to_string()
    };
    // SBPS_SCAN_BENCH_WRAP="heaptrack" (say) runs the children under a profiler.
    let wrap: Vec<String> = std::env::var("SBPS_SCAN_BENCH_WRAP")
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let exe = std::env::current_exe().unwrap().display().to_string();
    let mut cmd = wrap.iter().chain([&exe]);
    let mut child = Command::new(cmd.next().unwrap())
        .args(cmd)
        .args([
            "--child",
            &n.to_string(),
            s3_url.as_str(),
            ims_url.as_str(),
            &mount.path().display().to_string(),
            &tagged.to_string(),
            &sock,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rows = Vec::new();
    for line in io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(j) = line.strip_prefix("ROW ") {
            rows.push(serde_json::from_str::<Row>(j).unwrap());
        }
    }
    assert!(child.wait().unwrap().success(), "child for N={n} failed");
    for r in &mut rows {
        r.remote = remote;
    }
    rows
}

fn store_len(w: &World) -> usize {
    w.store.len()
}

/// Steady scans (and floor runs) per N, of which the best is reported: a busy host
/// adds tens of ms to one run in three at 5,000.
const STEADY_RUNS: usize = 5;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Row {
    n: usize,
    state: String,
    objects: usize,
    ms: [f64; 7], // gather desired observe plan apply persist total
    s3_list: u64,
    s3_get: u64,
    ims: u64,
    kernel_writes: u64,
    ops: usize,
    saveconfig: bool,
    ledger: bool,
    converged: bool,
    /// one-change only: every write under the new backstore / its LUN.
    writes_confined: Option<bool>,
    foreign: Vec<String>,
    /// VmHWM of the child at its end.
    vm_hwm_kib: u64,
    /// VmHWM of the child right after this row's scan(s).
    phase_hwm_kib: u64,
    /// Heap bytes (KiB): the most live during this row's scan(s), and live after.
    heap_peak_kib: u64,
    heap_live_kib: u64,
    /// Whether the fake kernel was served from the parent (the agent's own figures).
    #[serde(default)]
    remote: bool,
    /// The gather's stat of the mount's candidates (the kernel's reads of the s3fs
    /// mount), ms.
    #[serde(default)]
    mount_ms: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1..]);
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if !bench {
        for remote in [false, true] {
            let rows = run_n(&rt, 20, false, remote);
            assert_eq!(rows.len(), 4);
            for r in &rows {
                assert!(r.converged, "{r:?}");
            }
            let steady = &rows[1];
            assert_eq!((steady.ims, steady.s3_get, steady.kernel_writes), (1, 0, 0));
            assert_eq!(rows[3].writes_confined, Some(true), "{:?}", rows[3]);
        }
        return;
    }
    println!("scan benchmark: Agent::scan_and_publish, in-memory S3 double + IMS double on 127.0.0.1, sparse-file mount, fake configfs; one child process per N");
    // SBPS_SCAN_BENCH_N=5000 (comma-separated) runs only those sizes: a quicker round
    // while profiling; the targets are checked only on the full run.
    let only: Option<Vec<usize>> = std::env::var("SBPS_SCAN_BENCH_N")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    let sizes = only.clone().unwrap_or_else(|| vec![100, 1_000, 5_000]);
    // SBPS_SCAN_BENCH_RSS_ONLY=1: only the children that measure the agent alone.
    let rss_only = std::env::var_os("SBPS_SCAN_BENCH_RSS_ONLY").is_some();
    let (mut all, mut own) = (Vec::new(), Vec::new());
    for n in sizes {
        if !rss_only {
            all.extend(run_n(&rt, n, true, false));
        }
        own.extend(run_n(&rt, n, true, true));
    }
    if !rss_only {
        print_table(&all);
    }
    print_memory(&own);
    if only.is_none() && !rss_only {
        check(&all, &own);
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| N | objects | state | gather | desired | observe | plan | apply | persist | **total** | S3 list | S3 get | IMS | kernel writes | ops | saveconfig / ledger written | peak RSS |");
    println!(
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    );
    for r in rows {
        let m = &r.ms;
        let f = |x: f64| format!("{x:.1}");
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} | {} | {} | {} | {} / {} | {:.1} MiB |",
            r.n,
            r.objects,
            r.state,
            f(m[0]),
            f(m[1]),
            f(m[2]),
            f(m[3]),
            f(m[4]),
            f(m[5]),
            f(m[6]),
            r.s3_list,
            r.s3_get,
            r.ims,
            r.kernel_writes,
            r.ops,
            yn(r.saveconfig),
            yn(r.ledger),
            r.vm_hwm_kib as f64 / 1024.0
        );
    }
    println!("(times in ms; steady = best of 5 scans; floor = best of 5; peak RSS = VmHWM of the N's child process at its end, the in-process fake kernel included)");
}

/// The agent's own memory: the children whose kernel was served from the parent.
fn print_memory(rows: &[Row]) {
    let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
    println!();
    println!("The agent alone (fake kernel in the parent process), MiB:");
    println!();
    println!("| N | state | VmHWM after | heap peak during | heap live after | total ms |");
    println!("|---:|---|---:|---:|---:|---:|");
    for r in rows.iter().filter(|r| r.state != "floor") {
        println!(
            "| {} | {} | {} | {} | {} | {:.1} |",
            r.n,
            r.state,
            mib(r.phase_hwm_kib),
            mib(r.heap_peak_kib),
            mib(r.heap_live_kib),
            r.ms[6]
        );
    }
    println!("(VmHWM: the child's peak RSS so far; heap: bytes the agent had allocated, counted by the benchmark's allocator; steady and one change: over all their scans)");
    for r in rows.iter().filter(|r| r.state == "cold") {
        println!("agent peak RSS at N={}: {} MiB", r.n, mib(r.vm_hwm_kib));
    }
}

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn verdict(ok: bool, what: String) {
    println!("{} {what}", if ok { "PASS" } else { "MISS" });
}

fn check(rows: &[Row], own: &[Row]) {
    println!();
    let get = |n: usize, s: &str| rows.iter().find(|r| r.n == n && r.state == s).unwrap();
    for n in [100, 1_000, 5_000] {
        let s = get(n, "steady");
        let pages = s.objects.div_ceil(1000) as u64;
        verdict(
            s.ims == 1 && s.s3_list == pages && s.s3_get == 0 && s.kernel_writes == 0,
            format!(
                "N={n} steady: IMS {} (want 1), S3 list {} (want {pages}), manifest GETs {} (want 0), kernel writes {} (want 0)",
                s.ims, s.s3_list, s.s3_get, s.kernel_writes
            ),
        );
        verdict(
            !s.saveconfig && !s.ledger,
            format!(
                "N={n} steady rewrites no file (saveconfig {}, ledger {})",
                yn(s.saveconfig),
                yn(s.ledger)
            ),
        );
        let fl = get(n, "floor");
        verdict(
            s.ms[6] <= 1.5 * fl.ms[6],
            format!(
                "N={n} steady {:.1} ms <= 1.5 x floor {:.1} ms = {:.1} ms (ratio {:.2})",
                s.ms[6],
                fl.ms[6],
                1.5 * fl.ms[6],
                s.ms[6] / fl.ms[6]
            ),
        );
        let c = get(n, "one change");
        verdict(
            c.writes_confined == Some(true) && c.ops > 0,
            format!(
                "N={n} one change: {} kernel writes in {} ops, all under the new backstore and its LUN{}",
                c.kernel_writes,
                c.ops,
                if c.foreign.is_empty() {
                    String::new()
                } else {
                    format!(" — foreign: {:?}", c.foreign)
                }
            ),
        );
    }
    let (s1, s5) = (get(1_000, "steady").ms[6], get(5_000, "steady").ms[6]);
    verdict(
        s5 <= 6.0 * s1,
        format!(
            "steady time(5,000) {s5:.1} ms <= 6 x time(1,000) {s1:.1} ms = {:.1} ms (ratio {:.2})",
            6.0 * s1,
            s5 / s1
        ),
    );
    let (s5, c5) = (get(5_000, "steady").ms[6], get(5_000, "one change").ms[6]);
    verdict(
        s5 <= 200.0,
        format!("steady time(5,000) {s5:.1} ms <= 200 ms"),
    );
    // What a steady scan must read it cannot skip: the requests (the floor), the
    // kernel's configfs (observe) and the mount's stats. Everything else is allowed
    // twice the requests.
    let (st, fl) = (get(5_000, "steady"), get(5_000, "floor").ms[6]);
    let bound = 3.0 * fl + st.ms[2] + st.mount_ms;
    verdict(
        s5 <= bound,
        format!(
            "steady time(5,000) {s5:.1} ms <= 3 x floor {fl:.1} + observe {:.1} + mount stats {:.1} = {bound:.1} ms",
            st.ms[2], st.mount_ms
        ),
    );
    verdict(
        c5 <= s5 + 100.0,
        format!(
            "one change time(5,000) {c5:.1} ms <= steady {s5:.1} ms + 100 ms = {:.1} ms",
            s5 + 100.0
        ),
    );
    for n in [1_000, 5_000] {
        let Some(r) = own.iter().find(|r| r.n == n) else {
            continue;
        };
        let rss = r.vm_hwm_kib as f64 / 1024.0;
        if n == 5_000 {
            verdict(
                rss < 40.0,
                format!("the agent's own peak RSS at 5,000 {rss:.1} MiB < 40 MiB"),
            );
        } else {
            println!("INFO the agent's own peak RSS at 1,000 {rss:.1} MiB");
        }
    }
}

// ----------------------------------------------------------------- child side

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

/// CPU time (user + system) this process has used, in ms, shown beside a scan's wall
/// time (SBPS_SCAN_BENCH_DETAIL): more CPU than wall is work on both cores at once,
/// less is waiting.
fn cpu_ms() -> f64 {
    // SAFETY: getrusage writes the struct it is given and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn child(args: &[String]) {
    let n: usize = args[0].parse().unwrap();
    let s3: url::Url = args[1].parse().unwrap();
    let ims: url::Url = args[2].parse().unwrap();
    let mount = PathBuf::from(&args[3]);
    let tagged: usize = args[4].parse().unwrap();
    // The allocator the agent runs with (as the shipped binary's start-up log says it).
    if system() {
        eprintln!("N={n}: glibc malloc (SBPS_SCAN_BENCH_SYSTEM_MALLOC)");
    } else {
        eprintln!("N={n}: {}", sbps_marshal::allocator::describe());
    }
    // The kernel: the fake in this process, or the one the parent serves on a socket.
    let (fs, ctl): (Arc<dyn Fs>, Arc<dyn KernelCtl>) = match args[5].as_str() {
        "-" => {
            let k = Arc::new(Recorder::counting(kernel(), Path::new(ROOT)));
            (k.clone(), k)
        }
        sock => {
            let k = Arc::new(RemoteFs::new(PathBuf::from(sock)));
            (k.clone(), k)
        }
    };
    // As the shipped binary runs (`cli::main`): two workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(child_scans(n, s3, ims, mount, tagged, fs, ctl));
}

async fn child_scans(
    n: usize,
    s3: url::Url,
    ims: url::Url,
    mount: PathBuf,
    tagged: usize,
    fs: Arc<dyn Fs>,
    ctl: Arc<dyn KernelCtl>,
) {
    let state = tempfile::tempdir().unwrap();
    let creds = state.path().join("s3.passwd");
    std::fs::write(&creds, "AK:SK\n").unwrap();
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let env = [
        ("S3_PROTO", "http".to_string()),
        ("S3_HOST", s3.authority().to_string()),
        ("S3_CREDENTIAL_FILE", creds.display().to_string()),
        (
            "API_GATEWAY",
            ims.as_str().trim_end_matches('/').to_string(),
        ),
        ("SQUASHFS_S3FS_MOUNT", mount.display().to_string()),
        (
            "STATE_DIR",
            state.path().join("state").display().to_string(),
        ),
        (
            "LIO_SAVE_FILE",
            state.path().join("saveconfig.json").display().to_string(),
        ),
        ("TARGET_IQN", IQN.to_string()),
        ("NODE_LABEL", String::new()),
        ("TARGET_SERVICE", String::new()),
        ("REMOVAL_GRACE", "0".to_string()),
    ];
    let layers = Layers::load(
        Some(Path::new("/dev/null")),
        env.iter()
            .map(|(k, v)| (format!("SBPS_MARSHAL_{k}"), v.clone())),
        &[],
    )
    .unwrap();
    let settings = Settings::from_layers(&layers, "ncn-w001").unwrap();
    std::fs::create_dir_all(&settings.state_dir).unwrap();
    let sources = Sources::with_tokens(
        wiring::sources_config(&settings).unwrap(),
        Arc::new(StaticToken(Token::new(TOKEN.to_string()))),
    )
    .unwrap();

    let root = PathBuf::from(ROOT);
    let locks = tempfile::tempdir().unwrap();
    let target: Arc<dyn Target> = Arc::new(ConfigfsTarget::new(
        fs,
        ConfigfsSettings {
            root: root.clone(),
            iqn: IQN.into(),
            tag: 1,
            mount: mount.clone(),
            lock_dir: Some(locks.path().to_path_buf()),
            lock_timeout: sbps_marshal::lio::lock::DEFAULT_TIMEOUT,
        },
    ));
    let mut agent = Agent::with_parts(settings, sources, target, Box::new(NoServices)).unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let counts = |c: reqwest::Client, u: url::Url| async move {
        let s = c
            .get(u.join("control/counts").unwrap())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: Vec<u64> = s.split(' ').map(|x| x.parse().unwrap()).collect();
        (v[0], v[1], v[2], v[3] as usize)
    };

    let mut rows = Vec::new();
    let detail = std::env::var_os("SBPS_SCAN_BENCH_DETAIL").is_some();
    let scan = |state: &'static str,
                r: ScanReport,
                c0: (u64, u64, u64, usize),
                c1: (u64, u64, u64, usize),
                w: u64,
                cpu: f64| {
        let t = &r.timings;
        if detail {
            let g = &r.stats;
            eprintln!(
                "N={n} {state}: gather {:.1} ms = S3 list {:.1} | IMS {:.1} | manifests {:.1} | judging {:.1} | mount stats {:.1} ({}); scan {:.1} ms, CPU {cpu:.1} ms",
                ms(g.total),
                ms(g.s3_list.duration),
                ms(g.ims.duration),
                ms(g.manifest_fetch.duration),
                ms(g.judging),
                ms(g.mount_duration),
                g.mount_checked,
                ms(t.total)
            );
        }
        Row {
            n,
            state: state.into(),
            objects: c1.3,
            ms: [
                ms(t.gather),
                ms(t.desired),
                ms(t.observe),
                ms(t.plan),
                ms(t.apply),
                ms(t.persist),
                ms(t.total),
            ],
            s3_list: c1.0 - c0.0,
            s3_get: c1.1 - c0.1,
            ims: c1.2 - c0.2,
            kernel_writes: w,
            ops: r.outcomes.len(),
            saveconfig: r.saveconfig_written,
            ledger: r.ledger_written,
            converged: r.converged,
            writes_confined: None,
            foreign: Vec::new(),
            vm_hwm_kib: 0,
            phase_hwm_kib: 0,
            mount_ms: ms(r.stats.mount_duration),
            heap_peak_kib: 0,
            heap_live_kib: 0,
            remote: false,
        }
    };
    // The memory figures of the phase that ends now.
    let mark = |row: &mut Row| {
        row.phase_hwm_kib = vm_hwm_kib();
        (row.heap_peak_kib, row.heap_live_kib) = heap_phase();
    };

    // Cold.
    heap_phase();
    let c0 = counts(client.clone(), ims.clone()).await;
    let w0 = ctl.writes();
    let cpu0 = cpu_ms();
    let r = agent.scan_and_publish().await;
    let cpu = cpu_ms() - cpu0;
    assert!(r.converged, "cold: {:?}", r.problems());
    assert_eq!(r.desired.projections.len(), tagged + PES);
    let c1 = counts(client.clone(), ims.clone()).await;
    let mut row = scan("cold", r, c0, c1, ctl.writes() - w0, cpu);
    mark(&mut row);
    rows.push(row);

    // Steady: best of STEADY_RUNS.
    let mut best: Option<Row> = None;
    for _ in 0..STEADY_RUNS {
        let c0 = counts(client.clone(), ims.clone()).await;
        let w0 = ctl.writes();
        let cpu0 = cpu_ms();
        let r = agent.scan_and_publish().await;
        let cpu = cpu_ms() - cpu0;
        let c1 = counts(client.clone(), ims.clone()).await;
        let row = scan("steady", r, c0, c1, ctl.writes() - w0, cpu);
        // Requests, writes and rewrites must hold in every steady scan, not just the best.
        if let Some(b) = &best {
            assert_eq!(
                (b.s3_list, b.s3_get, b.ims, b.kernel_writes),
                (row.s3_list, row.s3_get, row.ims, row.kernel_writes)
            );
        }
        if best.as_ref().is_none_or(|b| row.ms[6] < b.ms[6]) {
            best = Some(row);
        }
    }
    let mut steady = best.unwrap();
    mark(&mut steady);
    let objects = steady.objects;

    // Floor: the same requests with the same HTTP client crate, no processing.
    let mut floor = f64::MAX;
    let c0 = counts(client.clone(), ims.clone()).await;
    for _ in 0..STEADY_RUNS {
        let t = Instant::now();
        let cpu0 = cpu_ms();
        let (a, pages) = tokio::join!(
            async {
                client
                    .get(ims.join("apis/ims/v3/images").unwrap())
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .len()
            },
            async {
                let mut token: Option<String> = None;
                let mut pages = 0;
                loop {
                    let mut u = s3.join(&format!("{BUCKET}/")).unwrap();
                    u.query_pairs_mut().append_pair("list-type", "2");
                    if let Some(t) = &token {
                        u.query_pairs_mut().append_pair("continuation-token", t);
                    }
                    let body = client.get(u).send().await.unwrap().text().await.unwrap();
                    pages += 1;
                    token = body
                        .split_once("<NextContinuationToken>")
                        .and_then(|(_, r)| r.split_once('<'))
                        .map(|(t, _)| t.to_string());
                    if token.is_none() {
                        break pages;
                    }
                }
            }
        );
        assert!(a > 0 && pages == objects.div_ceil(1000));
        if detail {
            eprintln!(
                "N={n} floor: {:.1} ms, CPU {:.1} ms",
                ms(t.elapsed()),
                cpu_ms() - cpu0
            );
        }
        floor = floor.min(ms(t.elapsed()));
    }
    let c1 = counts(client.clone(), ims.clone()).await;
    let floor_row = Row {
        state: "floor".into(),
        ms: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, floor],
        s3_list: (c1.0 - c0.0) / STEADY_RUNS as u64,
        s3_get: (c1.1 - c0.1) / STEADY_RUNS as u64,
        ims: (c1.2 - c0.2) / STEADY_RUNS as u64,
        kernel_writes: 0,
        ops: 0,
        saveconfig: false,
        ledger: false,
        ..steady.clone()
    };
    rows.push(steady);
    rows.push(floor_row);

    // One change: image N appears; then N + 1, then N + 2 (best of 3, as steady).
    heap_phase();
    let mut best: Option<Row> = None;
    for k in 0..3 {
        client
            .post(ims.join("control/add").unwrap())
            .send()
            .await
            .unwrap();
        let new = Identity::of_key(&identity::rootfs_key(
            &format!("s3://{BUCKET}/{}/rootfs", fixtures::image_id(n + k)),
            &fixtures::rootfs_etag(n + k),
        ));
        ctl.start_recording();
        let c0 = counts(client.clone(), ims.clone()).await;
        let w0 = ctl.writes();
        let cpu0 = cpu_ms();
        let r = agent.scan_and_publish().await;
        let cpu = cpu_ms() - cpu0;
        let c1 = counts(client.clone(), ims.clone()).await;
        assert!(r.converged, "one change: {:?}", r.problems());
        let mut row = scan("one change", r, c0, c1, ctl.writes() - w0, cpu);
        let log = ctl.take();
        // The new backstore is core/<hba>/<name>; its LUN is the one lun_K it mkdirs.
        let lun_dirs: Vec<String> = log
            .iter()
            .filter_map(|l| l.strip_prefix("mkdir "))
            .filter(|p| p.contains("/lun/lun_"))
            .map(str::to_string)
            .collect();
        let foreign: Vec<String> = log
            .iter()
            .filter(|l| {
                let p = l.split_once(' ').unwrap().1;
                let in_backstore = p.starts_with("core/")
                    && (p.split('/').nth(2) == Some(new.name.as_str())
                        || (l.starts_with("mkdir ") && p.matches('/').count() == 1));
                let in_lun = lun_dirs.len() == 1 && p.starts_with(lun_dirs[0].as_str());
                !(in_backstore || in_lun)
            })
            .cloned()
            .collect();
        row.writes_confined = Some(foreign.is_empty() && lun_dirs.len() == 1);
        row.foreign = foreign;
        if detail {
            eprintln!("N={n} one change #{}: total {:.1} ms", k + 1, row.ms[6]);
        }
        // Counts and confinement must hold in every one, not just the best.
        if let Some(b) = &best {
            assert_eq!(
                (b.s3_list, b.s3_get, b.ims, b.kernel_writes, b.ops),
                (row.s3_list, row.s3_get, row.ims, row.kernel_writes, row.ops)
            );
            if b.writes_confined != Some(true) {
                continue;
            }
        }
        if row.writes_confined != Some(true) || best.as_ref().is_none_or(|b| row.ms[6] < b.ms[6]) {
            best = Some(row);
        }
    }
    rows.extend(best.map(|mut b| {
        mark(&mut b);
        b
    }));

    let hwm = vm_hwm_kib();
    for mut r in rows {
        r.vm_hwm_kib = hwm;
        println!("ROW {}", serde_json::to_string(&r).unwrap());
    }
}
