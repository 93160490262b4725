//! `berth tls init|issue`: a CA and certificates that openssl verifies for
//! their purpose, with the role and name inside.

use std::process::Command;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn berth(args: &[&str]) -> std::process::Output {
    Command::new(BERTH).args(args).output().unwrap()
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_cluster_ca_issues_certificates_for_their_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(berth(&["tls", "init", "--dir", d]).status.success());
    let again = berth(&["tls", "init", "--dir", d]);
    assert!(!again.status.success(), "a CA is not overwritten");
    for (role, name) in [("server", "s1"), ("agent", "node-a"), ("client", "alice")] {
        let out = berth(&["tls", "issue", role, name, "--dir", d, "--san", "127.0.0.1"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ca = format!("{d}/ca.pem");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        &ca,
        "-purpose",
        "sslserver",
        &format!("{d}/server-s1.pem"),
    ]);
    assert!(ok, "{text}");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        &ca,
        "-purpose",
        "sslclient",
        &format!("{d}/agent-node-a.pem"),
    ]);
    assert!(ok, "{text}");
    // A client certificate cannot serve.
    let (ok, _) = openssl(&[
        "verify",
        "-CAfile",
        &ca,
        "-purpose",
        "sslserver",
        &format!("{d}/client-alice.pem"),
    ]);
    assert!(!ok);
    let (_, text) = openssl(&[
        "x509",
        "-noout",
        "-text",
        "-in",
        &format!("{d}/agent-node-a.pem"),
    ]);
    assert!(text.contains("URI:berth://agent/node-a"), "{text}");
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    // Keys are private.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(format!("{d}/agent-node-a-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Bad input names its field and writes nothing.
    let out = berth(&["tls", "issue", "root", "x", "--dir", d]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("role:"));
    let out = berth(&["tls", "issue", "agent", "Bad_Name", "--dir", d]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("name:"));
    assert!(!std::path::Path::new(&format!("{d}/agent-Bad_Name.pem")).exists());
}
