//! A real registry for tests: Debian's `docker-registry` on loopback with
//! TLS (a CA made here with openssl) and htpasswd auth.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

pub const USER: &str = "berth";
pub const PASSWORD: &str = "s3cret-pw";

pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The CA that signed its certificate (PEM).
    pub ca: PathBuf,
    /// Where it keeps blobs and manifests.
    pub storage: PathBuf,
    pub dir: tempfile::TempDir,
    child: Child,
}

fn sh(script: &str, dir: &Path) {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Registry {
    /// Starts a registry; waits until it answers.
    pub fn start() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        sh(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
               -keyout ca.key -out ca.pem -days 2 -subj /CN=berth-test-ca \
               -addext basicConstraints=critical,CA:TRUE \
               -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
               -keyout key.pem -out req.csr -subj /CN=localhost 2>/dev/null
             printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext
             openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
               -out cert.pem -days 2 -extfile ext 2>/dev/null",
            d,
        );
        sh(&format!("htpasswd -Bbn {USER} {PASSWORD} > htpasswd"), d);
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let storage = d.join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        std::fs::write(
            d.join("config.yml"),
            format!(
                "version: 0.1\nlog: {{level: warn}}\n\
                 storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
                 http: {{addr: '{host}', tls: {{certificate: {}, key: {}}}}}\n\
                 auth: {{htpasswd: {{realm: berth-test, path: {}}}}}\n",
                storage.display(),
                d.join("cert.pem").display(),
                d.join("key.pem").display(),
                d.join("htpasswd").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry (ci/setup.sh installs it)");
        wait_for("the registry", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&host).ok().map(|_| ())
        });
        Registry {
            ca: d.join("ca.pem"),
            host,
            storage,
            child,
            dir,
        }
    }

    /// `berth image push LAYOUT HOST/REF` with the right password.
    pub fn push(&self, layout: &Path, reference: &str) {
        let out = self.push_with(layout, reference, PASSWORD);
        assert!(
            out.status.success(),
            "push {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `berth image push` with `password`.
    pub fn push_with(
        &self,
        layout: &Path,
        reference: &str,
        password: &str,
    ) -> std::process::Output {
        let target = format!("{}/{reference}", self.host);
        let ca = self.ca.to_str().unwrap();
        let args = ["image", "push", layout.to_str().unwrap(), &target];
        let auth = ["--username", USER, "--password-stdin", "--registry-ca", ca];
        let all: Vec<&str> = args.iter().chain(&auth).copied().collect();
        super::berth_stdin(None, &all, password.as_bytes())
    }

    /// The blob files of the registry's storage.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let root = self.storage.join("docker/registry/v2/blobs/sha256");
        for prefix in std::fs::read_dir(&root).unwrap().flatten() {
            for b in std::fs::read_dir(prefix.path()).unwrap().flatten() {
                out.push(b.path().join("data"));
            }
        }
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
