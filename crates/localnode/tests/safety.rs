//! Issue 12, point 1: the host is never at a Pod's mercy. Each guard meets a hostile Pod spec and
//! the test asserts the refusal (a Waiting reason and message) or the confinement seen from inside
//! the Pod, with a positive control where a silent no-op would pass too.

mod support;

use std::time::Duration;

use capstan_testenv::ControlPlane;
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
    if !prerequisites("claim_names_that_climb_out_are_refused") {
        return;
    }
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "claims").await.expect("namespace");
    let node = node().await;
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
    if !prerequisites("a_sub_path_through_a_planted_symlink_is_refused") {
        return;
    }
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "subpath").await.expect("namespace");
    node().await;
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
    if !prerequisites("mount_paths_and_working_dirs_stay_inside_the_pod") {
        return;
    }
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "paths").await.expect("namespace");
    node().await;
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
    if !prerequisites("secrets_are_readable_by_the_pod_only") {
        return;
    }
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "secrets").await.expect("namespace");
    let node = node().await;
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
    if !prerequisites("containers_get_their_own_pids_a_minimal_dev_and_the_capabilities_asked_for") {
        return;
    }
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "confine").await.expect("namespace");
    let node = node().await;
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
    if !prerequisites("host_paths_are_refused") {
        return;
    }
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "hostpath").await.expect("namespace");
    node().await;
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
