//! A Pod's volumes as host directories under the Pod's state directory, bind-mounted by the
//! sandbox at their `mountPath`s. Contents are written once, when the Pod starts: ConfigMap and
//! Secret updates are not propagated into running Pods.

use std::{
    collections::{BTreeMap, HashMap},
    os::{fd::AsRawFd, unix::fs::PermissionsExt},
    path::{Component, Path, PathBuf},
};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};
use kube::Client;

use crate::pod_data;

/// One bind mount into the Pod's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    /// A file (a subPath naming one) rather than a directory.
    pub is_file: bool,
}

/// What `prepare` needs besides the Pod.
pub struct VolumeContext<'a> {
    pub client: &'a Client,
    pub pod: &'a Pod,
    /// Where this Pod's volumes live: `<dir>/<volume name>`.
    pub dir: &'a Path,
    /// Where PersistentVolumeClaims live, one directory per namespace and claim, kept as long as the
    /// agent runs so a claim's data survives the Pods using it.
    pub claims_dir: &'a Path,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    /// hostPath volumes expose the host: refused unless the node was started allowing them.
    pub allow_host_path: bool,
}

/// Materialises every volume; returns each volume's host directory (or file, for hostPath).
pub async fn prepare(ctx: &VolumeContext<'_>) -> Result<HashMap<String, PathBuf>, String> {
    let namespace = ctx.pod.metadata.namespace.clone().unwrap_or_default();
    let fs_group = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let mut out = HashMap::new();
    for volume in ctx.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = ctx.dir.join(&volume.name);
        let path = prepare_one(ctx, &namespace, volume, &dir).await?;
        if let Some(group) = fs_group
            && path.starts_with(ctx.dir)
        {
            chown_group_recursive(&path, group);
        }
        out.insert(volume.name.clone(), path);
    }
    Ok(out)
}

async fn prepare_one(ctx: &VolumeContext<'_>, namespace: &str, volume: &Volume, dir: &Path) -> Result<PathBuf, String> {
    let create = |dir: &Path, mode: u32| -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("volume {}: {e}", volume.name))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("volume {}: {e}", volume.name))
    };
    if volume.empty_dir.is_some() {
        // The kubelet makes emptyDirs world-writable, so any runAsUser can use them.
        create(dir, 0o777)?;
    } else if let Some(cm) = &volume.config_map {
        create(dir, 0o755)?;
        let optional = cm.optional.unwrap_or(false);
        if let Some(data) = pod_data::config_map_data(ctx.client, namespace, &cm.name, optional).await? {
            let data = data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            write_keys(dir, &data, cm.items.as_deref(), cm.default_mode, optional)?;
        }
    } else if let Some(secret) = &volume.secret {
        create(dir, 0o755)?;
        let name = secret.secret_name.clone().unwrap_or_default();
        let optional = secret.optional.unwrap_or(false);
        if let Some(data) = pod_data::secret_data(ctx.client, namespace, &name, optional).await? {
            let data = data.into_iter().map(|(k, v)| (k, v.0)).collect();
            write_keys(dir, &data, secret.items.as_deref(), secret.default_mode, optional)?;
        }
    } else if let Some(downward) = &volume.downward_api {
        create(dir, 0o755)?;
        write_downward(
            ctx,
            dir,
            downward.items.as_deref().unwrap_or_default(),
            downward.default_mode,
        )?;
    } else if let Some(projected) = &volume.projected {
        create(dir, 0o755)?;
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let optional = cm.optional.unwrap_or(false);
                if let Some(data) = pod_data::config_map_data(ctx.client, namespace, &cm.name, optional).await? {
                    let data = data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                    write_keys(dir, &data, cm.items.as_deref(), projected.default_mode, optional)?;
                }
            }
            if let Some(secret) = &source.secret {
                let optional = secret.optional.unwrap_or(false);
                if let Some(data) = pod_data::secret_data(ctx.client, namespace, &secret.name, optional).await? {
                    let data = data.into_iter().map(|(k, v)| (k, v.0)).collect();
                    write_keys(dir, &data, secret.items.as_deref(), projected.default_mode, optional)?;
                }
            }
            if let Some(downward) = &source.downward_api {
                write_downward(
                    ctx,
                    dir,
                    downward.items.as_deref().unwrap_or_default(),
                    projected.default_mode,
                )?;
            }
            if let Some(token) = &source.service_account_token {
                let jwt = pod_data::service_account_token(
                    ctx.client,
                    ctx.pod,
                    namespace,
                    token.audience.clone(),
                    token.expiration_seconds,
                )
                .await?;
                write_file(
                    dir,
                    &token.path,
                    jwt.as_bytes(),
                    projected.default_mode.map_or(0o644, |m| m as u32),
                )?;
            }
        }
    } else if let Some(claim) = &volume.persistent_volume_claim {
        return claim_dir(ctx.claims_dir, namespace, &claim.claim_name)
            .map_err(|e| format!("volume {}: {e}", volume.name));
    } else if let Some(host_path) = &volume.host_path {
        if !ctx.allow_host_path {
            return Err(format!(
                "volume {}: hostPath {} is refused by capstan-localnode: it would expose the developer's machine \
                 (start the node with --allow-privileged to permit it)",
                volume.name, host_path.path
            ));
        }
        return Ok(PathBuf::from(&host_path.path));
    } else {
        return Err(format!(
            "volume {}: this kind of volume is not supported by capstan-localnode (emptyDir, configMap, \
             secret, downwardAPI, projected, persistentVolumeClaim and hostPath are)",
            volume.name
        ));
    }
    Ok(dir.to_path_buf())
}

/// A claim's directory, `<claims>/<namespace>/<claim>`, created 0777 like an emptyDir. The apiserver
/// only checks that `claimName` is not empty: it must be a DNS-1123 name here, and the resolved
/// directory must lie inside the claims directory.
pub fn claim_dir(claims_dir: &Path, namespace: &str, claim: &str) -> Result<PathBuf, String> {
    if !crate::security::is_dns1123_subdomain(claim) || !crate::security::is_dns1123_subdomain(namespace) {
        return Err(format!(
            "persistentVolumeClaim.claimName {claim:?} is not a DNS-1123 name; refused"
        ));
    }
    let dir = claims_dir.join(namespace).join(claim);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let resolved = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
    let base = claims_dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", claims_dir.display()))?;
    if !resolved.starts_with(&base) || resolved == base {
        return Err(format!(
            "claim {claim:?} resolves outside the claims directory; refused"
        ));
    }
    std::fs::set_permissions(&resolved, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| format!("{}: {e}", resolved.display()))?;
    Ok(resolved)
}

fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<(), String> {
    let default_mode = default_mode.map_or(0o644, |m| m as u32);
    match items {
        None => {
            for (key, value) in data {
                write_file(dir, key, value, default_mode)?;
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => write_file(dir, &item.path, value, item.mode.map_or(default_mode, |m| m as u32))?,
                    None if optional => {}
                    None => return Err(format!("key {} not found for item {}", item.key, item.path)),
                }
            }
        }
    }
    Ok(())
}

fn write_downward(
    ctx: &VolumeContext<'_>,
    dir: &Path,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
) -> Result<(), String> {
    for item in items {
        let value = pod_data::downward_file_value(ctx.pod, item, ctx.pod_ip, ctx.host_ip)?;
        let mode = item.mode.or(default_mode).map_or(0o644, |m| m as u32);
        write_file(dir, &item.path, value.as_bytes(), mode)?;
    }
    Ok(())
}

/// Writes `dir/relative` refusing paths that climb out of `dir`.
fn write_file(dir: &Path, relative: &str, contents: &[u8], mode: u32) -> Result<(), String> {
    let relative = Path::new(relative);
    if relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "volume path {} must be relative without `..`",
            relative.display()
        ));
    }
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn chown_group_recursive(path: &Path, group: u32) {
    let _ = std::os::unix::fs::lchown(path, None, Some(group));
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            chown_group_recursive(&entry.path(), group);
        }
    }
}

/// The bind mounts of all the Pod's containers (all containers share one mount namespace, so a
/// path mounted by one container is visible to all), parents before children. A `subPath` is
/// opened beneath its volume without following any symlink, and mounted through that open file
/// (`/proc/<agent>/fd/<n>`), so neither a symlink planted in a volume nor a swap after the check can
/// point it elsewhere (CVE-2017-1002101). The returned files must stay open until the sandbox has
/// mounted them.
pub fn mounts(pod: &Pod, volumes: &HashMap<String, PathBuf>) -> Result<(Vec<Mount>, Vec<std::fs::File>), String> {
    let mut mounts: Vec<Mount> = Vec::new();
    let mut held = Vec::new();
    let spec = pod.spec.as_ref();
    let containers = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()));
    for container in containers {
        for mount in container.volume_mounts.iter().flatten() {
            crate::security::check_pod_path("mountPath", &mount.mount_path)
                .map_err(|e| format!("container {}: {e}", container.name))?;
            if mounts.iter().any(|existing| existing.target == mount.mount_path) {
                continue;
            }
            let source = volumes
                .get(&mount.name)
                .ok_or_else(|| format!("container {} mounts unknown volume {}", container.name, mount.name))?;
            let (source, is_file) = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => {
                    let file = open_beneath(source, sub)?;
                    let is_file = !file.metadata().map_err(|e| format!("subPath {sub}: {e}"))?.is_dir();
                    let path = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd()));
                    held.push(file);
                    (path, is_file)
                }
                None => (source.clone(), source.is_file()),
            };
            mounts.push(Mount {
                source,
                target: mount.mount_path.clone(),
                read_only: mount.read_only.unwrap_or(false),
                is_file,
            });
        }
    }
    mounts.sort_by_key(|m| Path::new(&m.target).components().count());
    Ok((mounts, held))
}

/// Opens `root/sub` one component at a time, each relative to the last and never following a
/// symlink; missing components are created as directories (as the kubelet does for a subPath).
pub fn open_beneath(root: &Path, sub: &str) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |why: String| format!("subPath {sub:?}: {why}; refused");
    let relative = Path::new(sub);
    let parts: Vec<&std::ffi::OsStr> = relative
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(Ok(p)),
            Component::CurDir => None,
            _ => Some(Err(())),
        })
        .collect::<Result<_, ()>>()
        .map_err(|()| refuse("must be a relative path without `..`".into()))?;
    let open = |path: &Path, directory: bool| {
        let flags = nix::libc::O_PATH | nix::libc::O_NOFOLLOW | if directory { nix::libc::O_DIRECTORY } else { 0 };
        std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path)
    };
    let mut current = open(root, true).map_err(|e| refuse(format!("volume root {}: {e}", root.display())))?;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let path = PathBuf::from(format!("/proc/self/fd/{}", current.as_raw_fd())).join(part);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&path).map_err(|e| refuse(format!("creating {}: {e}", part.display())))?;
            }
            Err(e) => return Err(refuse(e.to_string())),
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(refuse(format!("{} is a symlink", part.display())));
            }
            Ok(_) => {}
        }
        let next = open(&path, !last).map_err(|e| refuse(format!("{}: {e}", part.display())))?;
        let meta = next.metadata().map_err(|e| refuse(e.to_string()))?;
        if meta.file_type().is_symlink() {
            return Err(refuse(format!("{} is a symlink", part.display())));
        }
        current = next;
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_pick_keys_paths_and_modes() -> Result<(), String> {
        let dir = std::env::temp_dir().join(format!("capstan-localnode-volumes-{}", std::process::id()));
        let data = BTreeMap::from([("a".to_owned(), b"1".to_vec()), ("b".to_owned(), b"2".to_vec())]);
        let items = vec![KeyToPath {
            key: "a".into(),
            path: "sub/x".into(),
            mode: Some(0o600),
            ..KeyToPath::default()
        }];
        write_keys(&dir, &data, Some(&items), Some(0o644), false)?;
        let mode = std::fs::metadata(dir.join("sub/x"))
            .map_err(|e| e.to_string())?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.join("b").exists());
        assert!(write_file(&dir, "../escape", b"", 0o644).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn sub_paths_never_follow_a_symlink_out_of_their_volume() -> Result<(), String> {
        let root = std::env::temp_dir().join(format!("capstan-localnode-subpath-{}", std::process::id()));
        let volume = root.join("volume");
        std::fs::create_dir_all(volume.join("real")).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink("/etc", volume.join("escape")).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink("real", volume.join("inner")).map_err(|e| e.to_string())?;
        assert!(open_beneath(&volume, "escape").is_err_and(|e| e.contains("symlink")));
        assert!(open_beneath(&volume, "escape/passwd").is_err());
        assert!(
            open_beneath(&volume, "inner/x").is_err(),
            "no symlink at all, even an inner one"
        );
        assert!(open_beneath(&volume, "../volume").is_err());
        let made = open_beneath(&volume, "real/new/dir")?;
        assert!(made.metadata().map_err(|e| e.to_string())?.is_dir());
        assert!(volume.join("real/new/dir").is_dir());
        let _ = std::fs::remove_dir_all(&root);
        Ok(())
    }

    #[test]
    fn claim_names_cannot_leave_the_claims_directory() -> Result<(), String> {
        let claims = std::env::temp_dir().join(format!("capstan-localnode-claims-{}", std::process::id()));
        std::fs::create_dir_all(&claims).map_err(|e| e.to_string())?;
        for bad in ["../../etc", "/etc", "..", "a/../../x"] {
            assert!(claim_dir(&claims, "ns", bad).is_err(), "{bad} accepted");
        }
        assert!(claim_dir(&claims, "..", "data").is_err());
        let dir = claim_dir(&claims, "ns", "data-0")?;
        assert!(dir.starts_with(claims.canonicalize().map_err(|e| e.to_string())?));
        let _ = std::fs::remove_dir_all(&claims);
        Ok(())
    }
}
