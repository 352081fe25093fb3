//! A password rotation made live: Redis accepts the new password beside the old one, Pods adopt
//! it, and the Sentinels are told.
use super::{
    Cluster,
    commands::{config_set, ping, sentinel_ok, sentinel_set},
    conn::{IoError, Target, is_auth_refused},
    parse::sentinel_client_ids,
};

/// A password change made live on a Redis still running with the previous password (`target`
/// authenticates with it): it accepts the new one as well (`ACL SETUSER default on >new`, until it
/// restarts from the new template) and authenticates to its master with the new one (`CONFIG SET
/// masterauth`), so old and new Pods replicate from each other while the Pods roll. Then the
/// Sentinels' links to it are reopened ([`drop_sentinel_links`]).
pub async fn accept_new_password(target: Target<'_>, new: &str, sentinel_hosts: &[&str]) -> Result<(), IoError> {
    accept_password_too(target, new).await?;
    config_set(target, "masterauth", new).await?;
    drop_sentinel_links(target, sentinel_hosts).await
}

/// `ACL SETUSER default on >new`: the default user takes `new` beside the passwords it has.
async fn accept_password_too(target: Target<'_>, new: &str) -> Result<(), IoError> {
    target
        .query(
            "ACL SETUSER",
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("default")
                .arg("on")
                .arg(format!(">{new}"))
                .clone(),
        )
        .await
}

/// Closes the Sentinels' connections to `target` so they reconnect and authenticate afresh.
/// Sentinel sends `AUTH` once, when it opens a link, and takes `-NOAUTH` answers to its PINGs for
/// a live link it never reopens: a Sentinel that opened its links with the new password before
/// this Redis accepted it (a Sentinel Pod restarted by the roll) would hold a healthy master down
/// after `down-after-milliseconds`.
pub async fn drop_sentinel_links(target: Target<'_>, sentinel_hosts: &[&str]) -> Result<(), IoError> {
    let clients: String = target
        .query("CLIENT LIST", redis::cmd("CLIENT").arg("LIST").clone())
        .await?;
    for id in sentinel_client_ids(&clients, sentinel_hosts) {
        // Gone already is as good as closed.
        let _: Result<i64, _> = target
            .query(
                "CLIENT KILL",
                redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).clone(),
            )
            .await;
    }
    Ok(())
}

/// For each of `pods` that refuses the current password but takes `previous`: makes it accept the
/// current one ([`accept_new_password`]). Returns what was done per Pod.
pub async fn adopt_password<'a>(
    cluster: Cluster<'a>,
    pods: &[String],
    previous: Option<&'a str>,
) -> Vec<(String, Result<(), IoError>)> {
    let Some(new) = cluster.password else {
        return Vec::new(); // turning auth off is not rotated live
    };
    let sentinel_hosts: Vec<&str> = cluster.sentinels.iter().map(|s| s.connect.host.as_str()).collect();
    let mut done = Vec::new();
    for member in cluster.redis.iter().filter(|m| pods.contains(&m.pod)) {
        match ping(Target::new(&member.connect, Some(new), cluster.timeouts)).await {
            Err(error) if is_auth_refused(&error) => {}
            _ => continue, // takes the new password already, or is down for another reason
        }
        let outcome = accept_new_password(
            Target::new(&member.connect, previous, cluster.timeouts),
            new,
            &sentinel_hosts,
        )
        .await;
        done.push((member.pod.clone(), outcome));
    }
    done
}

/// For each Sentinel that refuses the current password but takes `previous`: makes it accept the
/// current one as well (`ACL SETUSER default on >new`), so Redis Pods not rolled yet, which send
/// the previous one, and rolled ones, which send the new one, both reach it. The previous one
/// stops working when the Sentinel Pods roll, after the Redis Pods. Returns what was done per Pod.
pub async fn adopt_sentinel_password<'a>(
    cluster: Cluster<'a>,
    previous: Option<&'a str>,
) -> Vec<(String, Result<(), IoError>)> {
    let Some(new) = cluster.password else {
        return Vec::new();
    };
    let mut done = Vec::new();
    for member in cluster.sentinels {
        match ping(Target::sentinel(&member.connect, Some(new), cluster.timeouts)).await {
            Err(error) if is_auth_refused(&error) => {}
            _ => continue,
        }
        let outcome = accept_password_too(Target::sentinel(&member.connect, previous, cluster.timeouts), new).await;
        done.push((member.pod.clone(), outcome));
    }
    done
}

/// Tells every Sentinel the current password: for the master set (`SENTINEL SET … auth-pass`)
/// and for its peers (`SENTINEL CONFIG SET sentinel-pass`, after which it reopens its links to
/// them); true when all answered.
pub async fn tell_sentinels_password(cluster: Cluster<'_>) -> bool {
    let password = cluster.password.unwrap_or_default().to_owned();
    let told = futures::future::join_all(cluster.sentinels.iter().map(|member| {
        let password = password.clone();
        async move {
            let target = Target::sentinel(&member.connect, cluster.password, cluster.timeouts);
            sentinel_set(target, cluster.master_set, &[("auth-pass", password.clone())]).await?;
            if password.is_empty() {
                return Ok(());
            }
            sentinel_ok(
                target,
                "SENTINEL CONFIG SET",
                redis::cmd("SENTINEL")
                    .arg("CONFIG")
                    .arg("SET")
                    .arg("sentinel-pass")
                    .arg(&password)
                    .clone(),
            )
            .await
        }
    }))
    .await;
    !told.is_empty() && told.iter().all(Result::is_ok)
}
