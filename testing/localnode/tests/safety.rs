//! The host is never at a Pod's mercy. Each guard meets a hostile Pod spec and the test asserts the
//! refusal (a Waiting reason and message) or the confinement seen from inside the Pod, with a
//! positive control where a silent no-op would pass too.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Waits for the Pod's first container to be Waiting with `reason`, and returns the message.
async fn waiting_message(client: &kube::Client, ns: &str, pod: &str, reason: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{pod} Waiting with {reason}"), TIMEOUT, || async {
        let p = pods.get(pod).await.map_err(|e| e.to_string())?;
        let waiting = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.clone());
        match waiting {
            Some(w) if w.reason.as_deref() == Some(reason) => Ok(w.message.unwrap_or_default()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn running(client: &kube::Client, ns: &str, pod: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{pod} Running"), TIMEOUT, || async {
        let p = pods.get(pod).await.map_err(|e| e.to_string())?;
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
            Ok(())
        } else {
            Err(describe(&[p]))
        }
    })
    .await;
}

fn sleeper(name: &str, extra_spec: &str, extra_container: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
{extra_spec}
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "exec sleep 3600"]
{extra_container}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_names_that_climb_out_are_refused() {
    let Some(NodeTest { client, ns, node }) = on_local_node("claim_names_that_climb_out_are_refused", "claims").await
    else {
        return;
    };
    for (pod, claim) in [("dotdot", "../../etc"), ("absolute", "/etc")] {
        apply_yaml(
            &client,
            &ns,
            &sleeper(
                pod,
                &format!("  volumes: [{{name: data, persistentVolumeClaim: {{claimName: \"{claim}\"}}}}]"),
                "    volumeMounts: [{name: data, mountPath: /data}]",
            ),
        )
        .await;
        let message = waiting_message(&client, &ns, pod, "CreateContainerConfigError").await;
        eprintln!("{pod}: {message}");
        assert!(
            message.contains("claimName") && message.contains("refused"),
            "{message}"
        );
    }
    // Positive control: a proper claim name runs, and its directory is inside the claims directory.
    apply_yaml(
        &client,
        &ns,
        &sleeper(
            "proper",
            "  volumes: [{name: data, persistentVolumeClaim: {claimName: data-0}}]",
            "    volumeMounts: [{name: data, mountPath: /data}]",
        ),
    )
    .await;
    running(&client, &ns, "proper").await;
    assert!(node.state_dir().join("claims").join(&ns).join("data-0").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_path_through_a_planted_symlink_is_refused() {
    let Some(NodeTest { client, ns, .. }) =
        on_local_node("a_sub_path_through_a_planted_symlink_is_refused", "subpath").await
    else {
        return;
    };
    // The first Pod plants symlinks in a claim that outlives it: one to the host's root, one inside.
    apply_yaml(
        &client,
        &ns,
        &sleeper(
            "planter",
            "  volumes: [{name: data, persistentVolumeClaim: {claimName: shared}}]",
            "    volumeMounts: [{name: data, mountPath: /data}]",
        )
        .replace(
            "exec sleep 3600",
            "ln -s / /data/escape; mkdir -p /data/real; echo inside > /data/real/file; exec sleep 3600",
        ),
    )
    .await;
    running(&client, &ns, "planter").await;
    eventually("the planted symlink", TIMEOUT, || async {
        exec_in(&ns, "planter", "main", &["ls", "-l", "/data/escape"])
            .await
            .and_then(|out| if out.contains("->") { Ok(()) } else { Err(out) })
    })
    .await;
    apply_yaml(
        &client,
        &ns,
        &sleeper(
            "victim",
            "  volumes: [{name: data, persistentVolumeClaim: {claimName: shared}}]",
            "    volumeMounts: [{name: data, mountPath: /host, subPath: escape/etc}]",
        ),
    )
    .await;
    let message = waiting_message(&client, &ns, "victim", "CreateContainerConfigError").await;
    eprintln!("victim: {message}");
    assert!(message.contains("symlink") && message.contains("refused"), "{message}");
    // Positive control: a subPath to a real directory of the same claim is mounted.
    apply_yaml(
        &client,
        &ns,
        &sleeper(
            "fine",
            "  volumes: [{name: data, persistentVolumeClaim: {claimName: shared}}]",
            "    volumeMounts: [{name: data, mountPath: /sub, subPath: real}]",
        ),
    )
    .await;
    running(&client, &ns, "fine").await;
    let out = exec_in(&ns, "fine", "main", &["cat", "/sub/file"]).await.expect("exec");
    assert_eq!(out.trim(), "inside");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_paths_and_working_dirs_stay_inside_the_pod() {
    let Some(NodeTest { client, ns, .. }) =
        on_local_node("mount_paths_and_working_dirs_stay_inside_the_pod", "paths").await
    else {
        return;
    };
    // The sandbox's own names (where the host's root hangs while the Pod is assembled) are refused.
    apply_yaml(
        &client,
        &ns,
        &sleeper(
            "oldroot",
            "  volumes: [{name: v, emptyDir: {}}]",
            "    volumeMounts: [{name: v, mountPath: /.capstan-oldroot/tmp/pwned}]",
        ),
    )
    .await;
    let message = waiting_message(&client, &ns, "oldroot", "CreateContainerConfigError").await;
    assert!(message.contains("reserved"), "{message}");
    apply_yaml(
        &client,
        &ns,
        &sleeper("wd-oldroot", "", "    workingDir: /.capstan-oldroot/var/tmp/pwned"),
    )
    .await;
    let message = waiting_message(&client, &ns, "wd-oldroot", "CreateContainerConfigError").await;
    assert!(message.contains("reserved"), "{message}");
    // An ordinary new working directory and mount path exist inside the Pod and not on the host.
    let wd = format!("/var/tmp/capstan-wd-{ns}");
    let target = format!("/opt/capstan-mount-{ns}/deep");
    apply_yaml(
        &client,
        &ns,
        &sleeper(
            "inside",
            "  volumes: [{name: v, emptyDir: {}}]",
            &format!("    workingDir: {wd}\n    volumeMounts: [{{name: v, mountPath: {target}}}]"),
        ),
    )
    .await;
    running(&client, &ns, "inside").await;
    let out = exec_in(&ns, "inside", "main", &["sh", "-c", &format!("pwd; ls -d {target}")])
        .await
        .expect("exec");
    assert!(out.contains(&wd) && out.contains(&target), "{out}");
    assert!(!std::path::Path::new(&wd).exists(), "{wd} was created on the host");
    assert!(
        !std::path::Path::new(&format!("/opt/capstan-mount-{ns}")).exists(),
        "the mount path was created on the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_readable_by_the_pod_only() {
    let Some(NodeTest { client, ns, node }) = on_local_node("secrets_are_readable_by_the_pod_only", "secrets").await
    else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {password: hunter2}\n",
    )
    .await;
    apply_yaml(
        &client,
        &ns,
        &sleeper(
            "reader",
            "  volumes: [{name: creds, secret: {secretName: creds, defaultMode: 256}}]",
            "    volumeMounts: [{name: creds, mountPath: /creds}]",
        ),
    )
    .await;
    running(&client, &ns, "reader").await;
    let out = exec_in(
        &ns,
        "reader",
        "main",
        &["sh", "-c", "stat -c %a /creds/password; cat /creds/password"],
    )
    .await
    .expect("exec");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["400", "hunter2"], "{out}");
    // On the host: the file exists (root reads it) but another local user cannot reach it.
    let uid = Api::<Pod>::namespaced(client.clone(), &ns)
        .get("reader")
        .await
        .expect("pod")
        .metadata
        .uid
        .expect("uid");
    let on_host = node.state_dir().join("pods").join(uid).join("volumes/creds/password");
    assert_eq!(std::fs::read_to_string(&on_host).expect("root reads it"), "hunter2");
    let as_nobody = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(&on_host)
        .output()
        .expect("setpriv");
    eprintln!(
        "as nobody: {:?} {}",
        as_nobody.status,
        String::from_utf8_lossy(&as_nobody.stderr).trim()
    );
    assert!(!as_nobody.status.success(), "another user read {}", on_host.display());
    assert!(String::from_utf8_lossy(&as_nobody.stderr).contains("Permission denied"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(node.state_dir())
        .expect("state dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "state directory mode {mode:o}");
}

/// `Cap*:` of /proc/self/status as numbers.
fn capability(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:\t")))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_SYS_ADMIN: u64 = 1 << 21;
const CAP_CHOWN: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_get_their_own_pids_a_minimal_dev_and_the_capabilities_asked_for() {
    let Some(NodeTest { client, ns, node }) = on_local_node(
        "containers_get_their_own_pids_a_minimal_dev_and_the_capabilities_asked_for",
        "confine",
    )
    .await
    else {
        return;
    };
    apply_yaml(&client, &ns, &sleeper("default", "", "")).await;
    apply_yaml(
        &client,
        &ns,
        &sleeper(
            "dropped",
            "  volumes: [{name: scratch, emptyDir: {}}]",
            "    volumeMounts: [{name: scratch, mountPath: /scratch}]\n    securityContext:\n      \
             capabilities: {drop: [ALL]}\n      allowPrivilegeEscalation: false\n      readOnlyRootFilesystem: true",
        ),
    )
    .await;
    apply_yaml(
        &client,
        &ns,
        &sleeper("privileged", "", "    securityContext: {privileged: true}"),
    )
    .await;
    running(&client, &ns, "default").await;
    running(&client, &ns, "dropped").await;

    // PID namespace: the Pod sees its own processes only, PID 1 being the sandbox's.
    let pids = exec_in(
        &ns,
        "default",
        "main",
        &["sh", "-c", "ls /proc | grep -c '^[0-9]*$'; cat /proc/1/cmdline"],
    )
    .await
    .expect("exec");
    let host_pids = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        })
        .count();
    let count: usize = pids
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a count");
    eprintln!("processes seen in the Pod: {count}, on the host: {host_pids}; pid 1: {pids:?}");
    assert!(count < 10 && count < host_pids, "{pids}");
    assert!(pids.contains("sleep"), "PID 1 is the sandbox's: {pids}");

    // /dev: the listed devices only, working.
    let dev = exec_in(
        &ns,
        "default",
        "main",
        &["sh", "-c", "ls /dev; echo x > /dev/null && echo null-ok"],
    )
    .await
    .expect("exec");
    let mut names: Vec<&str> = dev.split_whitespace().filter(|n| *n != "null-ok").collect();
    names.sort();
    assert_eq!(
        names,
        [
            "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"
        ],
        "{dev}"
    );
    assert!(dev.contains("null-ok"));

    // Capabilities and no_new_privs: the default set lacks the host-changing ones; drop ALL leaves none.
    let default = exec_in(&ns, "default", "main", &["cat", "/proc/self/status"])
        .await
        .expect("exec");
    let bounding = capability(&default, "CapBnd");
    eprintln!("default CapBnd {bounding:016x}");
    assert!(bounding & CAP_CHOWN != 0, "root keeps the runtime's default set");
    assert_eq!(bounding & (CAP_NET_ADMIN | CAP_SYS_ADMIN), 0, "CapBnd {bounding:x}");
    assert!(default.contains("NoNewPrivs:\t1"), "{default}");
    let dropped = exec_in(&ns, "dropped", "main", &["cat", "/proc/self/status"])
        .await
        .expect("exec");
    assert_eq!(capability(&dropped, "CapBnd"), 0);
    assert_eq!(capability(&dropped, "CapEff"), 0);
    assert!(dropped.contains("NoNewPrivs:\t1"));
    // The container's own process, not only exec'd commands, runs that way.
    let pid = node.container_pid(&ns, "dropped", "main").expect("a container pid");
    let main = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    assert!(main.contains("Name:\tsleep"), "{main}");
    assert_eq!(capability(&main, "CapBnd"), 0);
    assert!(main.contains("NoNewPrivs:\t1"));
    let chown = exec_in(
        &ns,
        "dropped",
        "main",
        &["sh", "-c", "chown 1:1 /scratch && echo chowned || echo refused"],
    )
    .await
    .expect("exec");
    assert!(chown.contains("refused"), "root without CAP_CHOWN: {chown}");

    // readOnlyRootFilesystem: the root refuses writes, a volume takes them.
    let writes = exec_in(
        &ns,
        "dropped",
        "main",
        &[
            "sh",
            "-c",
            "touch /rootfile 2>&1; touch /tmp/x 2>&1; touch /scratch/ok && echo volume-ok",
        ],
    )
    .await
    .expect("exec");
    assert_eq!(writes.matches("Read-only file system").count(), 2, "{writes}");
    assert!(writes.contains("volume-ok"), "{writes}");
    let default_writes = exec_in(&ns, "default", "main", &["sh", "-c", "touch /rootfile && echo root-ok"])
        .await
        .expect("exec");
    assert!(default_writes.contains("root-ok"), "{default_writes}");

    // privileged is refused on a node not started with --allow-privileged.
    let message = waiting_message(&client, &ns, "privileged", "CreateContainerConfigError").await;
    assert!(message.contains("--allow-privileged"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_paths_are_refused() {
    let Some(NodeTest { client, ns, .. }) = on_local_node("host_paths_are_refused", "hostpath").await else {
        return;
    };
    apply_yaml(
        &client,
        &ns,
        &sleeper(
            "hostroot",
            "  volumes: [{name: root, hostPath: {path: /}}]",
            "    volumeMounts: [{name: root, mountPath: /host}]",
        ),
    )
    .await;
    let message = waiting_message(&client, &ns, "hostroot", "CreateContainerConfigError").await;
    assert!(message.contains("hostPath") && message.contains("refused"), "{message}");
}

const CAP_MKNOD: u64 = 1 << 27;
const CAP_NET_BIND_SERVICE: u64 = 1 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_beyond_the_default_set_are_refused() {
    let Some(NodeTest { client, ns, .. }) =
        on_local_node("capabilities_beyond_the_default_set_are_refused", "caps").await
    else {
        return;
    };
    for (pod, cap) in [
        ("sys-admin", "SYS_ADMIN"),
        ("all", "ALL"),
        ("net-admin", "NET_ADMIN"),
        ("mknod", "MKNOD"),
    ] {
        apply_yaml(
            &client,
            &ns,
            &sleeper(
                pod,
                "",
                &format!("    securityContext: {{capabilities: {{add: [{cap}]}}}}"),
            ),
        )
        .await;
    }
    apply_yaml(
        &client,
        &ns,
        &sleeper(
            "bind-only",
            "",
            "    securityContext: {capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}",
        ),
    )
    .await;
    apply_yaml(&client, &ns, &sleeper("default", "", "")).await;
    for (pod, cap) in [
        ("sys-admin", "SYS_ADMIN"),
        ("all", "ALL"),
        ("net-admin", "NET_ADMIN"),
        ("mknod", "MKNOD"),
    ] {
        let message = waiting_message(&client, &ns, pod, "CreateContainerConfigError").await;
        eprintln!("{pod}: {message}");
        assert!(
            message.contains(&format!("capability {cap} ")) && message.contains("--allow-privileged"),
            "{message}"
        );
    }
    // Positive control: an allowlisted capability is granted, and nothing else with it.
    running(&client, &ns, "bind-only").await;
    let status = exec_in(&ns, "bind-only", "main", &["cat", "/proc/self/status"])
        .await
        .expect("exec");
    assert_eq!(capability(&status, "CapBnd"), CAP_NET_BIND_SERVICE, "{status}");
    running(&client, &ns, "default").await;
    let status = exec_in(&ns, "default", "main", &["cat", "/proc/self/status"])
        .await
        .expect("exec");
    let bounding = capability(&status, "CapBnd");
    assert!(
        bounding & CAP_CHOWN != 0 && bounding & CAP_MKNOD == 0,
        "CapBnd {bounding:x}"
    );
}

/// A device node the test makes on the host, removed when the test ends (also on failure).
struct Planted(std::path::PathBuf);

impl Planted {
    fn block(path: std::path::PathBuf, (major, minor): (u64, u64)) -> Planted {
        let out = std::process::Command::new("mknod")
            .args(["-m", "600"])
            .arg(&path)
            .args(["b", &major.to_string(), &minor.to_string()])
            .output()
            .expect("mknod");
        assert!(out.status.success(), "mknod {}: {out:?}", path.display());
        Planted(path)
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The major and minor number of the block device holding the host's root file system.
fn host_root_device() -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").expect("/").dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// `dev:inode` of a path on the host.
fn host_identity(path: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).expect(path);
    format!("{}:{}", m.dev(), m.ino())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_device_node_but_the_standard_ones_opens_in_a_pod() {
    let Some(NodeTest { client, ns, node }) =
        on_local_node("no_device_node_but_the_standard_ones_opens_in_a_pod", "devices").await
    else {
        return;
    };
    let (major, minor) = host_root_device();
    eprintln!("host root block device {major}:{minor}");
    // Device nodes of the host's root disk where a Pod can reach them without making one: in the
    // host's root file system (the Pod's lower layer) and in a claim's directory.
    let in_root = Planted::block(format!("/var/tmp/capstan-disk-{ns}").into(), (major, minor));
    let claim = node.state_dir().join("claims").join(&ns).join("planted");
    std::fs::create_dir_all(&claim).expect("claim dir");
    let _in_claim = Planted::block(claim.join("disk"), (major, minor));
    apply_yaml(
        &client,
        &ns,
        &sleeper(
            "default",
            "  volumes: [{name: data, persistentVolumeClaim: {claimName: planted}}, {name: scratch, emptyDir: {}}]",
            "    volumeMounts: [{name: data, mountPath: /data}, {name: scratch, mountPath: /scratch}]",
        ),
    )
    .await;
    running(&client, &ns, "default").await;

    // A default (uid 0) Pod cannot make a device node, in /dev (the one tmpfs that allows them)
    // or anywhere else.
    let made = exec_in(
        &ns,
        "default",
        "main",
        &[
            "sh",
            "-c",
            &format!(
                "for at in /dev/hostdisk /tmp/hostdisk /scratch/hostdisk; do \
                 mknod $at b {major} {minor} && echo made $at; done; echo end"
            ),
        ],
    )
    .await
    .expect("exec");
    eprintln!("mknod in the Pod: {made}");
    assert!(!made.contains("made"), "{made}");
    assert_eq!(made.matches("Operation not permitted").count(), 3, "{made}");

    // The planted nodes are there, and open nothing.
    let planted = in_root.0.display().to_string();
    let read = exec_in(
        &ns,
        "default",
        "main",
        &[
            "sh",
            "-c",
            &format!(
                "for n in {planted} /data/disk; do ls -l $n; head -c 512 $n > /dev/null && echo read $n; done; echo end"
            ),
        ],
    )
    .await
    .expect("exec");
    eprintln!("reading planted nodes: {read}");
    assert_eq!(read.lines().filter(|l| l.starts_with('b')).count(), 2, "{read}");
    assert!(!read.contains("read "), "{read}");
    assert_eq!(read.matches("Permission denied").count(), 2, "{read}");

    // The standard nodes work, and are the Pod's own (a chmod in the Pod cannot reach the host's
    // /dev/null); so is the file masking /etc/shadow.
    let own = exec_in(
        &ns,
        "default",
        "main",
        &[
            "sh",
            "-c",
            "head -c 4 /dev/zero | wc -c; stat -c '%d:%i %t:%T' /dev/null /etc/shadow",
        ],
    )
    .await
    .expect("exec");
    eprintln!(
        "standard nodes: {own}; the host's /dev/null {}",
        host_identity("/dev/null")
    );
    assert!(own.starts_with('4'), "{own}");
    assert_eq!(own.matches(" 1:3").count(), 2, "{own}");
    let host_null = host_identity("/dev/null");
    assert!(own.split_whitespace().all(|t| t != host_null), "{own}");

    // Nothing is executed from /dev/shm; a volume is executable although the node's state tmpfs
    // behind it is not.
    let exec = exec_in(
        &ns,
        "default",
        "main",
        &[
            "sh",
            "-c",
            "cp /bin/true /dev/shm/t && /dev/shm/t && echo shm-ran; \
             cp /bin/true /scratch/t && /scratch/t && echo volume-ran",
        ],
    )
    .await
    .expect("exec");
    eprintln!("exec: {exec}");
    assert!(
        !exec.contains("shm-ran") && exec.contains("Permission denied"),
        "{exec}"
    );
    assert!(exec.contains("volume-ran"), "{exec}");
    let state = node.state_dir().to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let flags = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some(state.as_str()))
        .and_then(|l| l.split_whitespace().nth(5))
        .unwrap_or_default();
    eprintln!("state tmpfs {state}: {flags}");
    assert!(
        ["nosuid", "nodev", "noexec"]
            .iter()
            .all(|f| flags.split(',').any(|x| x == *f)),
        "{flags}"
    );
}

/// The mount options of `path` in a Pod's `/proc/self/mountinfo` (the last mount on it wins).
fn mount_options(mountinfo: &str, path: &str) -> Option<String> {
    mountinfo
        .lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some(path))
        .and_then(|l| l.split_whitespace().nth(5).map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_is_masked_and_read_only_in_proc_and_sys() {
    let Some(NodeTest { client, ns, .. }) =
        on_local_node("the_kernel_is_masked_and_read_only_in_proc_and_sys", "kernel").await
    else {
        return;
    };
    apply_yaml(&client, &ns, &sleeper("default", "", "")).await;
    running(&client, &ns, "default").await;
    let run = |script: String| {
        let ns = ns.clone();
        async move {
            exec_in(&ns, "default", "main", &["sh", "-c", &script])
                .await
                .expect("exec")
        }
    };

    // core_pattern would run a helper of the Pod's choosing as root on the host. The value
    // written is the host's own, so a missing guard changes nothing on this machine.
    let core = run(
        "p=$(cat /proc/sys/kernel/core_pattern); printf '%s\\n' \"$p\" > /proc/sys/kernel/core_pattern \
         && echo written; cat /proc/sys/kernel/hostname"
            .into(),
    )
    .await;
    eprintln!("core_pattern: {core}");
    assert!(
        !core.contains("written") && core.contains("Read-only file system"),
        "{core}"
    );
    assert!(
        core.contains("default"),
        "/proc/sys stays readable (the Pod's hostname): {core}"
    );

    // sysrq-trigger: opened for appending, nothing is ever written to it.
    let sysrq = run(": >> /proc/sysrq-trigger && echo opened; echo end".into()).await;
    eprintln!("sysrq-trigger: {sysrq}");
    assert!(!sysrq.contains("opened"), "{sysrq}");
    if std::path::Path::new("/proc/sysrq-trigger").exists() {
        assert!(sysrq.contains("Read-only file system"), "{sysrq}");
    } else {
        eprintln!("/proc/sysrq-trigger is absent on this kernel: its read-only mount is not exercised here");
    }

    // kcore (the host's memory) is empty or absent; so are the other masked files the host has.
    let masked = run(
        "for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/latency_stats /proc/timer_stats; do \
         [ -e $f ] && echo \"$f $(wc -c < $f)\"; done; echo dirs $(ls /proc/acpi /proc/scsi /proc/asound /sys/firmware 2>/dev/null | grep -v :); echo end"
            .into(),
    )
    .await;
    eprintln!("masked paths: {masked}");
    let mut checked = 0;
    for line in masked.lines() {
        if let Some((file, size)) = line.split_once(' ').filter(|(f, _)| f.starts_with("/proc/")) {
            assert_eq!(size.trim(), "0", "{file} is readable in the Pod: {masked}");
            if std::fs::read(file).is_ok_and(|c| !c.is_empty()) {
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 1,
        "no masked file with content on the host was checked: {masked}"
    );
    assert!(
        masked.lines().any(|l| l.trim() == "dirs"),
        "a masked directory has entries: {masked}"
    );
    assert!(
        std::fs::read_dir("/sys/firmware").is_ok_and(|mut d| d.next().is_some()),
        "the host's /sys/firmware has entries, so the empty one in the Pod is the mask"
    );

    // The kernel's tunables are read-only mounts, and so is /sys.
    let mountinfo = run("cat /proc/self/mountinfo".into()).await;
    for path in [
        "/proc/sys",
        "/proc/irq",
        "/proc/bus",
        "/proc/fs",
        "/proc/sysrq-trigger",
        "/sys",
    ] {
        if !std::path::Path::new(path).exists() {
            eprintln!("{path} is absent on this kernel");
            continue;
        }
        let options = mount_options(&mountinfo, path).unwrap_or_default();
        eprintln!("{path}: {options}");
        assert!(
            options.split(',').next() == Some("ro"),
            "{path} is not read-only: {options}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_the_node_cannot_honour_are_refused() {
    let Some(NodeTest { client, ns, .. }) =
        on_local_node("settings_the_node_cannot_honour_are_refused", "unhonoured").await
    else {
        return;
    };
    let refused = [
        (
            "sysctls",
            sleeper(
                "sysctls",
                "  securityContext: {sysctls: [{name: kernel.shm_rmid_forced, value: \"1\"}]}",
                "",
            ),
            "sysctls (kernel.shm_rmid_forced=1)",
        ),
        (
            "selinux",
            sleeper("selinux", "", "    securityContext: {seLinuxOptions: {type: spc_t}}"),
            "seLinuxOptions",
        ),
        (
            "apparmor",
            sleeper("apparmor", "", "").replace(
                "metadata: {name: apparmor}",
                "metadata: {name: apparmor, annotations: \
                 {container.apparmor.security.beta.kubernetes.io/main: runtime/default}}",
            ),
            "AppArmor profile runtime/default",
        ),
    ];
    for (_, yaml, _) in &refused {
        apply_yaml(&client, &ns, yaml).await;
    }
    for (pod, _, expected) in &refused {
        let message = waiting_message(&client, &ns, pod, "CreateContainerConfigError").await;
        eprintln!("{pod}: {message}");
        assert!(message.contains(expected) && message.contains("refused"), "{message}");
    }

    // procMount is alpha (ProcMountType) on this apiserver, which drops the field unless the gate
    // is on: the node refuses it when it arrives, else the Pod gets the masked /proc it would.
    apply_yaml(
        &client,
        &ns,
        &sleeper("unmasked", "", "    securityContext: {procMount: Unmasked}"),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let kept = pods
        .get("unmasked")
        .await
        .expect("pod")
        .spec
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.security_context)
        .and_then(|sc| sc.proc_mount);
    if kept.as_deref() == Some("Unmasked") {
        let message = waiting_message(&client, &ns, "unmasked", "CreateContainerConfigError").await;
        eprintln!("unmasked: {message}");
        assert!(message.contains("procMount \"Unmasked\""), "{message}");
    } else {
        eprintln!("the apiserver dropped procMount ({kept:?}): checking the Pod's /proc is masked");
        running(&client, &ns, "unmasked").await;
        let out = exec_in(&ns, "unmasked", "main", &["sh", "-c", "wc -c < /proc/timer_list"])
            .await
            .expect("exec");
        assert_eq!(out.trim(), "0", "{out}");
    }
}
