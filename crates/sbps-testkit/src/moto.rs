//! A real S3 server (moto, started as `python3 -m moto.server`) and an s3fs mount of
//! it: the peers the S3 double is not, for the tests that want the real protocol
//! (multipart ETags, s3fs's view of a bucket). Both bind 127.0.0.1 only and are torn
//! down on drop. Each panics saying what to install when its program is missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use rusty_s3::actions::{CreateMultipartUpload, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use url::Url;

/// The keys of [`credential_file`] (moto accepts any).
pub const ACCESS: &str = "AKIDTESTTEST";
pub const SECRET: &str = "test-secret-value";

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto S3 server on a free loopback port; killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub endpoint: Url,
    client: reqwest::Client,
}

impl Moto {
    pub async fn start() -> Moto {
        let port = free_port();
        // `python3 -m moto.server` is `moto_server` without depending on a PATH shim.
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            // Small multipart parts, so a multipart ETag costs no megabytes.
            .env("S3_UPLOAD_PART_MIN_SIZE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 not runnable");
        let endpoint: Url = format!("http://127.0.0.1:{port}").parse().unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut m = Moto {
            child,
            port,
            endpoint,
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = m.client.get(m.endpoint.clone()).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("moto server exited with {status} (is it installed? pip install 'moto[server]')");
            }
            assert!(
                Instant::now() < deadline,
                "moto server did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        m
    }

    pub fn bucket(&self, name: &str) -> Bucket {
        Bucket::new(
            self.endpoint.clone(),
            UrlStyle::Path,
            name.to_string(),
            "us-east-1",
        )
        .unwrap()
    }

    pub async fn create_bucket(&self, name: &str) {
        let creds = creds();
        let b = self.bucket(name);
        let action = b.create_bucket(&creds);
        let url = action.sign(Duration::from_secs(60));
        let body = action.body();
        let r = self
            .client
            .put(url)
            .header("content-length", body.len())
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    /// PUTs one object; returns the ETag header as sent (quoted).
    pub async fn put(&self, bucket: &str, key: &str, body: impl Into<reqwest::Body>) -> String {
        let creds = creds();
        let b = self.bucket(bucket);
        let url = b
            .put_object(Some(&creds), key)
            .sign(Duration::from_secs(60));
        let r = self.client.put(url).body(body).send().await.unwrap();
        assert!(r.status().is_success(), "put {key}: {}", r.status());
        r.headers()["etag"].to_str().unwrap().to_string()
    }

    /// DELETEs one object.
    pub async fn delete(&self, bucket: &str, key: &str) {
        let creds = creds();
        let url = self
            .bucket(bucket)
            .delete_object(Some(&creds), key)
            .sign(Duration::from_secs(60));
        let r = self.client.delete(url).send().await.unwrap();
        assert!(r.status().is_success(), "delete {key}: {}", r.status());
    }

    /// PUTs many small objects, 16 at a time.
    pub async fn put_many(&self, bucket: &str, keys: Vec<String>) {
        stream::iter(keys)
            .map(|k| async move {
                self.put(bucket, &k, k.clone().into_bytes()).await;
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
    }

    /// A multipart upload of `parts`; returns the final (quoted) ETag.
    pub async fn put_multipart(&self, bucket: &str, key: &str, parts: &[Vec<u8>]) -> String {
        let creds = creds();
        let b = self.bucket(bucket);
        let url = b
            .create_multipart_upload(Some(&creds), key)
            .sign(Duration::from_secs(60));
        let text = self
            .client
            .post(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let upload = CreateMultipartUpload::parse_response(&text).unwrap();
        let mut etags = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let url = b
                .upload_part(Some(&creds), key, (i + 1) as u16, upload.upload_id())
                .sign(Duration::from_secs(60));
            let r = self
                .client
                .put(url)
                .body(part.clone())
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            etags.push(r.headers()["etag"].to_str().unwrap().to_string());
        }
        let action = b.complete_multipart_upload(
            Some(&creds),
            key,
            upload.upload_id(),
            etags.iter().map(String::as_str),
        );
        let url = action.sign(Duration::from_secs(60));
        let body = action.body();
        let r = self.client.post(url).body(body).send().await.unwrap();
        assert!(r.status().is_success(), "complete: {}", r.status());
        let text = r.text().await.unwrap();
        let start = text.find("<ETag>").unwrap() + 6;
        let end = text.find("</ETag>").unwrap();
        text[start..end]
            .replace("&#34;", "\"")
            .replace("&quot;", "\"")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn creds() -> Credentials {
    Credentials::new(ACCESS, SECRET)
}

/// A credential file `ACCESS:SECRET` (mode 0600) in `dir`.
pub fn credential_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("s3.passwd");
    std::fs::write(&p, format!("{ACCESS}:{SECRET}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// An s3fs mount of a moto bucket; unmounted on drop.
pub struct S3fsMount {
    pub dir: tempfile::TempDir,
    pub mountpoint: PathBuf,
}

impl S3fsMount {
    /// Mounts `bucket` or panics with the reason (a missing /dev/fuse must fail loudly).
    pub fn mount(moto: &Moto, bucket: &str) -> S3fsMount {
        let dir = tempfile::tempdir().unwrap();
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        let passwd = credential_file(dir.path());
        let opts = format!(
            "url=http://127.0.0.1:{},use_path_request_style,passwd_file={},endpoint=us-east-1,stat_cache_expire=1,retries=2",
            moto.port,
            passwd.display()
        );
        let out = Command::new("s3fs")
            .arg(bucket)
            .arg(&mountpoint)
            .args(["-o", &opts])
            .output()
            .unwrap_or_else(|e| panic!("s3fs not runnable (apt-get install s3fs): {e}"));
        assert!(
            out.status.success(),
            "s3fs mount failed ({}): {} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // s3fs daemonizes; wait until the mount shows in /proc/mounts.
        let deadline = Instant::now() + Duration::from_secs(10);
        let want = mountpoint.canonicalize().unwrap();
        loop {
            let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
            if mounts
                .lines()
                .any(|l| l.split(' ').nth(1) == Some(want.to_str().unwrap()))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "s3fs mount at {} did not appear (is /dev/fuse usable?)",
                want.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        S3fsMount { dir, mountpoint }
    }
}

impl Drop for S3fsMount {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("fusermount")
                .arg("-u")
                .arg(&self.mountpoint)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
    }
}
