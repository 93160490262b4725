//! The default seccomp profile: what Docker's default profile refuses to a
//! container with the default capabilities, written as a deny list (the
//! syscalls it leaves out of its allow list, and its argument rules for
//! `clone`). Denied calls fail with EPERM; `clone3` with ENOSYS, so C
//! libraries fall back to `clone`, whose namespace flags are checked.
//! Names this kernel or architecture lacks are skipped by libcontainer.

use serde_json::{Value, json};

/// Syscalls refused with EPERM: kernel modules and keyrings, mounts and
/// namespaces, clocks, tracing other processes, NUMA policy, BPF and perf,
/// reboot and swap, and the obsolete.
const DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "syslog",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// `clone` flags that make new namespaces.
const NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// This machine's architecture and the ones it runs natively, as Docker
/// lists them.
fn architectures() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => vec![],
    }
}

/// The profile as the OCI runtime spec's `linux.seccomp`.
pub fn default_profile() -> Value {
    let mut syscalls = vec![
        json!({"names": DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}),
    ];
    // On s390x the flags are the second argument; elsewhere the first.
    for flag in NAMESPACE_FLAGS {
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures(),
        "syscalls": syscalls
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_parses_as_an_oci_seccomp_section() {
        let v = default_profile();
        let parsed: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(v).unwrap();
        let names: Vec<&String> = parsed
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .flat_map(|s| s.names())
            .collect();
        for must in ["mount", "unshare", "setns", "ptrace", "clone", "clone3"] {
            assert!(names.iter().any(|n| *n == must), "{must}");
        }
        assert!(!names.iter().any(|n| *n == "read"));
    }
}
