//! The user an image's config names (`User`: `uid`, `uid:gid`, `name`,
//! `name:group`), resolved as OCI runtimes do: names through the image's
//! own `/etc/passwd` and `/etc/group`; a user without a group runs with
//! its primary group from `/etc/passwd` (else 0).

use std::path::{Path, PathBuf};

/// The file at `rel` as the image's layers stack it (top layer first; a
/// whiteout, a character device, reads as absent).
fn layered(layers: &[PathBuf], rel: &str) -> Option<String> {
    layers
        .iter()
        .rev()
        .map(|l| l.join(rel))
        .find(|p| std::fs::symlink_metadata(p).is_ok())
        .and_then(|p: PathBuf| std::fs::read_to_string(Path::new(&p)).ok())
}

/// `(name, id, primary gid)` entries of a passwd file, or `(name, id)` of
/// a group file (the gid column is absent there).
fn entries(text: &str) -> Vec<(String, u32, Option<u32>)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let id = f.get(2)?.parse().ok()?;
            Some((f[0].to_string(), id, f.get(3).and_then(|g| g.parse().ok())))
        })
        .collect()
}

/// The uid and gid `user` names in an image with `layers`, or why not.
pub fn resolve_user(user: Option<&str>, layers: &[PathBuf]) -> Result<(u32, u32), String> {
    let Some(user) = user.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = entries(&layered(layers, "etc/passwd").unwrap_or_default());
    let entry = match u.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|e| e.1 == uid)
            .cloned()
            .or(Some((u.into(), uid, None))),
        Err(_) => passwd.iter().find(|e| e.0 == u).cloned(),
    };
    let Some((_, uid, primary)) = entry else {
        return Err(format!(
            "image user {u:?} is not in the image's /etc/passwd"
        ));
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entries(&layered(layers, "etc/group").unwrap_or_default())
                .iter()
                .find(|e| e.0 == g)
                .map(|e| e.1)
                .ok_or_else(|| format!("image group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_through_the_images_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let (low, high) = (dir.path().join("l0"), dir.path().join("l1"));
        std::fs::create_dir_all(low.join("etc")).unwrap();
        std::fs::create_dir_all(high.join("etc")).unwrap();
        std::fs::write(low.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        // The top layer's file wins.
        std::fs::write(
            high.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(high.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let layers = vec![low, high];
        let r = |u: Option<&str>| resolve_user(u, &layers);
        assert_eq!(r(None), Ok((0, 0)));
        assert_eq!(r(Some("app")), Ok((1000, 1001)), "primary group");
        assert_eq!(r(Some("1000")), Ok((1000, 1001)));
        assert_eq!(r(Some("4242")), Ok((4242, 0)), "a uid not in passwd");
        assert_eq!(r(Some("app:staff")), Ok((1000, 50)));
        assert_eq!(r(Some("1000:7")), Ok((1000, 7)));
        assert!(
            r(Some("ghost"))
                .unwrap_err()
                .contains("\"ghost\" is not in the image's /etc/passwd")
        );
        assert!(r(Some("app:nogroup")).unwrap_err().contains("/etc/group"));
    }
}
