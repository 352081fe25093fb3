//! Real `redis-server` and `redis-sentinel` processes (Debian's) on 127.0.0.1, started by the
//! scripts and configuration `config.rs` renders (127.0.0.1 and a port per process standing in
//! for the Pods' FQDNs): the survey reads the truth, a `SENTINEL FAILOVER` requested through
//! `redis_io` promotes a replica, and a master restarted in place hands over instead of serving.
use std::{
    collections::BTreeMap,
    fs,
    io::Read,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use capstan_redis_ha::{
    config::{self, Announce, Endpoint, Layout, Rendering, SentinelTimings},
    render::{redis_config_data, sentinel_config_data},
    testing::{
        healer::{self, Role, Survey},
        redis_io::{self, Cluster, RedisMember, SentinelMember, Target, Timeouts},
    },
};

const MASTER_SET: &str = "itest";
/// With a space and quotes, so the scripts' quoting is exercised.
const PASSWORD: &str = "s3cret-$ymbols!pass#1";

/// Every process this test started; killed (SIGKILL) and reaped on drop, also on panic, when the
/// logs are printed for diagnosis.
struct Processes {
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Processes {
    fn spawn(&mut self, name: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> usize {
        let log = fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        self.children.push((name.to_owned(), child));
        self.children.len() - 1
    }

    fn signal(&mut self, index: usize, signal: nix::sys::signal::Signal) {
        let pid = i32::try_from(self.children[index].1.id()).expect("pid");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("signal");
    }

    fn kill(&mut self, index: usize) {
        let (_, child) = &mut self.children[index];
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits for a one-shot process (the Sentinel init script), bounded.
    fn wait_success(&mut self, index: usize, bound: Duration) {
        let deadline = Instant::now() + bound;
        let (name, child) = &mut self.children[index];
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(status.success(), "{name} failed: {status}\n{}", log(&self.dir, name));
                return;
            }
            assert!(Instant::now() < deadline, "{name} still running after {bound:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn log(dir: &Path, name: &str) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(dir.join(format!("{name}.log"))) {
        let _ = file.read_to_string(&mut text);
    }
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                eprintln!("----- {name} -----\n{}", log(&self.dir, name));
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn available() -> bool {
    let missing: Vec<&str> = ["/usr/bin/redis-server", "/usr/bin/redis-sentinel", "/usr/bin/redis-cli"]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "missing {missing:?} (Debian's redis-server and redis-sentinel)"
    );
    println!("SKIPPED sentinel_failover: missing {missing:?}");
    false
}

/// The rendering for one process: everything shared, its own port and directories.
fn rendering(base: &Rendering, dir: &Path, redis_port: u16, sentinel_port: u16) -> Rendering {
    let layout = Layout {
        config_dir: dir.join("config").display().to_string(),
        runtime_dir: dir.join("runtime").display().to_string(),
        data_dir: dir.join("data").display().to_string(),
        // No bootstrap record here: the init scripts seed ordinal 0, as on first creation.
        bootstrap_dir: dir.join("bootstrap").display().to_string(),
    };
    for sub in ["config", "runtime", "data"] {
        fs::create_dir_all(dir.join(sub)).expect("dirs");
    }
    Rendering {
        redis_port,
        sentinel_port,
        layout,
        ..base.clone()
    }
}

fn write_files(dir: &Path, files: BTreeMap<String, String>) {
    for (name, content) in files {
        fs::write(dir.join("config").join(name), content).expect("write config");
    }
}

async fn wait_for(
    what: &str,
    bound: Duration,
    cluster: Cluster<'_>,
    done: impl Fn(&Survey) -> bool,
) -> (Survey, Duration) {
    let started = Instant::now();
    loop {
        let survey = redis_io::survey(cluster).await;
        if done(&survey) {
            let elapsed = started.elapsed();
            println!("{what}: after {elapsed:?}");
            return (survey, elapsed);
        }
        assert!(
            started.elapsed() < bound,
            "{what}: not within {bound:?}; last survey:\n{survey:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn master_of(survey: &Survey) -> Vec<&str> {
    survey
        .redis
        .iter()
        .filter(|p| p.replication.as_ref().is_some_and(|r| r.role == Role::Master))
        .map(|p| p.pod.as_str())
        .collect()
}

/// One master (`pod`), every replica linked to it, every Sentinel naming it with the full counts
/// and no failover in progress.
fn settled_on(survey: &Survey, pod: &str) -> bool {
    let Some(master) = survey.redis.iter().find(|p| p.pod == pod) else {
        return false;
    };
    master_of(survey) == [pod]
        && survey.redis.iter().filter(|p| p.pod != pod).all(|p| {
            p.replication
                .as_ref()
                .is_some_and(|r| r.link_up && r.master.as_ref() == Some(&master.address))
        })
        && survey.sentinels.iter().all(|s| {
            s.view.as_ref().is_some_and(|v| {
                v.master.as_ref() == Some(&master.address)
                    && !v.failover_in_progress
                    && v.known_replicas == 2
                    && v.known_sentinels == 2
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_redis_and_sentinels_fail_over_and_a_restarted_master_hands_over() {
    if !available() {
        return;
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let mut processes = Processes {
        dir: temp.path().to_owned(),
        children: Vec::new(),
    };
    let redis_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let sentinel_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let local = |port| Endpoint::new("127.0.0.1", port);
    let base = Rendering {
        master_set: MASTER_SET.into(),
        quorum: 2,
        auth: true,
        persistent: false,
        extra_config: BTreeMap::from([("maxmemory".to_owned(), "64mb".to_owned())]),
        bind: "127.0.0.1".into(),
        redis_port: 0,
        sentinel_port: 0,
        redis_announce: Announce::Fixed("127.0.0.1".into()),
        sentinel_announce: Announce::Fixed("127.0.0.1".into()),
        bootstrap_master: local(redis_ports[0]),
        redis_host_suffix: String::new(),
        sentinels: sentinel_ports.iter().map(|p| local(*p)).collect(),
        timings: SentinelTimings {
            down_after_ms: 3_000,
            failover_timeout_ms: 20_000,
        },
        layout: Layout::default(),
    };
    let env_password = [(config::ENV_PASSWORD, PASSWORD), (config::ENV_REDISCLI_AUTH, PASSWORD)];

    // Sentinels: the init script seeds sentinel.conf (no peer answers yet: ordinal 0), then Sentinel.
    let mut inits = Vec::new();
    for (i, port) in sentinel_ports.iter().enumerate() {
        let dir = temp.path().join(format!("sentinel-{i}"));
        let r = rendering(&base, &dir, 0, *port);
        write_files(&dir, sentinel_config_data(&r));
        let script = dir.join("config").join(config::SENTINEL_INIT);
        let pod = format!("{MASTER_SET}-sentinel-{i}");
        let mut env = vec![(config::ENV_POD_NAME, pod.as_str())];
        env.extend(env_password);
        inits.push((
            processes.spawn(
                &format!("sentinel-init-{i}"),
                "/bin/sh",
                &[script.to_str().expect("utf-8")],
                &env,
            ),
            dir,
        ));
    }
    for (i, (init, dir)) in inits.into_iter().enumerate() {
        processes.wait_success(init, Duration::from_secs(60));
        let conf = dir.join("runtime").join(config::SENTINEL_CONF);
        let seeded = fs::read_to_string(&conf).expect("seeded sentinel.conf");
        assert!(
            seeded.contains(&format!("sentinel monitor {MASTER_SET} 127.0.0.1 {} 2", redis_ports[0])),
            "{seeded}"
        );
        assert!(!seeded.contains('@'), "every placeholder filled in: {seeded}");
        processes.spawn(
            &format!("sentinel-{i}"),
            "redis-sentinel",
            &[conf.to_str().expect("utf-8")],
            &[],
        );
    }

    // Redis: every Pod runs the start script; the Sentinels name ordinal 0 and know no replica.
    let mut redis_processes = Vec::new();
    let mut members = Vec::new();
    for (i, port) in redis_ports.iter().enumerate() {
        let dir = temp.path().join(format!("redis-{i}"));
        let r = rendering(&base, &dir, *port, 0);
        write_files(&dir, redis_config_data(&r).expect("renders"));
        let pod = format!("{MASTER_SET}-{i}");
        let mut env = vec![(config::ENV_POD_NAME, pod.as_str())];
        env.extend(env_password);
        let script = dir.join("config").join(config::REDIS_START);
        redis_processes.push((
            processes.spawn(&pod, "/bin/sh", &[script.to_str().expect("utf-8")], &env),
            script,
        ));
        members.push(RedisMember {
            pod,
            ordinal: i as u32,
            announced: local(*port),
            connect: local(*port),
            role_label: None,
        });
    }
    let sentinels: Vec<SentinelMember> = sentinel_ports
        .iter()
        .enumerate()
        .map(|(i, port)| SentinelMember {
            pod: format!("{MASTER_SET}-sentinel-{i}"),
            connect: local(*port),
        })
        .collect();
    let cluster = Cluster {
        master_set: MASTER_SET,
        redis: &members,
        sentinels: &sentinels,
        quorum: 2,
        desired_replicas: 3,
        password: Some(PASSWORD),
        timings: base.timings,
        timeouts: Timeouts::default(),
    };

    let (survey, _) = wait_for(
        "bootstrap: itest-0 master, two linked replicas, Sentinels agree",
        Duration::from_secs(90),
        cluster,
        |o| settled_on(o, "itest-0"),
    )
    .await;
    let plan = healer::decide(&survey);
    assert_eq!(plan.master.as_deref(), Some("itest-0"));
    assert!(
        plan.actions
            .iter()
            .all(|a| matches!(a, healer::Action::LabelRole { .. })),
        "only labels to set on a healthy set: {:?}",
        plan.actions
    );

    // The listing calls and an unknown master set, as Sentinel answers them.
    let s0 = Target::sentinel(&sentinels[0].connect, Some(PASSWORD), Timeouts::default());
    let replicas = redis_io::sentinel_replicas(s0, MASTER_SET)
        .await
        .expect("SENTINEL REPLICAS");
    let mut replica_ports: Vec<&str> = replicas
        .iter()
        .filter_map(|r| r.get("port").map(String::as_str))
        .collect();
    replica_ports.sort_unstable();
    let mut expected: Vec<String> = redis_ports[1..].iter().map(u16::to_string).collect();
    expected.sort_unstable();
    assert_eq!(replica_ports, expected);
    assert_eq!(
        redis_io::sentinel_sentinels(s0, MASTER_SET)
            .await
            .expect("SENTINEL SENTINELS")
            .len(),
        2
    );
    let unknown = redis_io::sentinel_view(s0, "no-such-set")
        .await
        .expect("an unknown set is no error");
    assert_eq!(unknown.master, None);
    assert!(matches!(
        redis_io::sentinel_replicas(s0, "no-such-set").await,
        Err(redis_io::IoError::Redis { .. })
    ));

    // A write acknowledged by a replica.
    let client = |port: u16| redis_client(port, PASSWORD);
    let mut master = client(redis_ports[0])
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the master");
    let _: () = redis::cmd("SET")
        .arg("acknowledged")
        .arg("yes")
        .query_async(&mut master)
        .await
        .expect("SET");
    let acknowledged: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut master)
        .await
        .expect("WAIT");
    assert!(acknowledged >= 1, "a replica acknowledged: {acknowledged}");
    // The master refuses writes without a replica? It has two, so this write went through.

    // A failover requested through redis_io.
    // Sentinel refuses (NOGOODSLAVE) until it has seen the replicas' INFO, which a loaded
    // machine may delay: ask again for a while.
    let asked = Instant::now();
    while let Err(error) = redis_io::sentinel_failover(
        Target::sentinel(&sentinels[1].connect, Some(PASSWORD), Timeouts::default()),
        MASTER_SET,
    )
    .await
    {
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "SENTINEL FAILOVER refused for 30 s: {error}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (survey, elapsed) = wait_for(
        "SENTINEL FAILOVER: a replica promoted, the old master its replica",
        Duration::from_secs(60),
        cluster,
        |o| matches!(master_of(o)[..], [m] if m != "itest-0" && settled_on(o, m)),
    )
    .await;
    assert!(elapsed < Duration::from_secs(60));
    let new_master = master_of(&survey)[0].to_owned();
    let new_index: usize = new_master.trim_start_matches("itest-").parse().expect("ordinal");
    let mut promoted = client(redis_ports[new_index])
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the new master");
    let value: Option<String> = redis::cmd("GET")
        .arg("acknowledged")
        .query_async(&mut promoted)
        .await
        .expect("GET");
    assert_eq!(
        value.as_deref(),
        Some("yes"),
        "the acknowledged write survived the failover"
    );

    // Restart safety: the master's process dies and its start script runs again at once, while
    // the Sentinels still name it. It must never answer as master; it has them fail over and joins
    // the new master as a replica.
    let epoch_before = healer::newest_epoch(&redis_io::survey(cluster).await);
    let (process, script) = &redis_processes[new_index];
    let script = script.clone();
    processes.kill(*process);
    let mut env = vec![(config::ENV_POD_NAME, new_master.as_str())];
    env.extend(env_password);
    processes.spawn(
        &format!("{new_master}-restarted"),
        "/bin/sh",
        &[script.to_str().expect("utf-8")],
        &env,
    );
    let restarted = Target::new(&members[new_index].connect, Some(PASSWORD), Timeouts::default());
    let started = Instant::now();
    let mut answers = 0;
    let final_master = loop {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the restarted master did not rejoin as a replica within 90 s"
        );
        if let Ok(replication) = redis_io::info_replication(restarted).await {
            answers += 1;
            assert_eq!(
                replication.role,
                Role::Replica,
                "a restarted master served as master: {replication:?}"
            );
            let survey = redis_io::survey(cluster).await;
            if let [m] = master_of(&survey)[..]
                && m != new_master
                && settled_on(&survey, m)
            {
                break m.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "restarted {new_master} rejoined as a replica of {final_master} after {:?} ({answers} answers, all as replica)",
        started.elapsed()
    );
    assert!(answers >= 1);
    let restart_log = log(temp.path(), &format!("{new_master}-restarted"));
    assert!(
        restart_log.contains("the Sentinels still name this Pod master"),
        "the restart took the hand-over path:\n{restart_log}"
    );
    // Handed over by the Sentinels on their own once they saw it down, or at its request when
    // they did not: one failover either way (a request racing theirs would be a second).
    let epoch_after = healer::newest_epoch(&redis_io::survey(cluster).await);
    println!(
        "restart hand-over: config-epoch {epoch_before} -> {epoch_after}; asked: {}",
        restart_log.contains("SENTINEL FAILOVER itest via")
    );
    assert_eq!(epoch_after, epoch_before + 1, "exactly one failover:\n{restart_log}");
    let final_index: usize = final_master.trim_start_matches("itest-").parse().expect("ordinal");
    let mut last = client(redis_ports[final_index])
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the final master");
    let value: Option<String> = redis::cmd("GET")
        .arg("acknowledged")
        .query_async(&mut last)
        .await
        .expect("GET");
    assert_eq!(value.as_deref(), Some("yes"), "no data lost to the restart");

    // The healer, through `perform`: a replica turned master by hand (split brain) is demoted to
    // the quorum's master, and a Sentinel made to monitor a replica is pointed back.
    let stray = members
        .iter()
        .find(|m| m.pod != final_master)
        .expect("a replica")
        .clone();
    redis_io::replicaof(Target::new(&stray.connect, Some(PASSWORD), Timeouts::default()), None)
        .await
        .expect("REPLICAOF NO ONE");
    let survey = redis_io::survey(cluster).await;
    let mut two = master_of(&survey);
    two.sort_unstable();
    assert_eq!(two.len(), 2, "two masters now: {survey:#?}");
    let plan = healer::decide(&survey);
    assert_eq!(plan.master.as_deref(), Some(final_master.as_str()), "{plan:#?}");
    let final_address = members[final_index].announced.clone();
    assert!(
        plan.actions.contains(&healer::Action::Demote {
            pod: stray.pod.clone(),
            master: final_address.clone()
        }),
        "{plan:#?}"
    );
    perform_all(&plan, cluster).await;
    // Checked at once, before Sentinel's own correction could (it waits several INFO periods).
    let demoted = redis_io::info_replication(Target::new(&stray.connect, Some(PASSWORD), Timeouts::default()))
        .await
        .expect("INFO");
    assert_eq!(demoted.role, Role::Replica, "{demoted:?}");
    assert_eq!(demoted.master.as_ref(), Some(&final_address));

    let wrong = members
        .iter()
        .find(|m| m.pod != final_master)
        .expect("a replica")
        .announced
        .clone();
    redis_io::sentinel_remonitor(
        Target::sentinel(&sentinels[2].connect, Some(PASSWORD), Timeouts::default()),
        MASTER_SET,
        &wrong,
        2,
        base.timings,
        Some(PASSWORD),
    )
    .await
    .expect("re-monitor a replica");
    let survey = redis_io::survey(cluster).await;
    let plan = healer::decide(&survey);
    let fix = healer::Action::SentinelMonitor {
        sentinel: sentinels[2].pod.clone(),
        master: final_address.clone(),
    };
    assert!(plan.actions.contains(&fix), "{plan:#?}");
    perform_all(&plan, cluster).await;
    let named = redis_io::sentinel_master_address(
        Target::sentinel(&sentinels[2].connect, Some(PASSWORD), Timeouts::default()),
        MASTER_SET,
    )
    .await
    .expect("GET-MASTER-ADDR-BY-NAME");
    assert_eq!(named.as_ref(), Some(&final_address));
    wait_for(
        "healed: one master, Sentinels agree again",
        Duration::from_secs(60),
        cluster,
        |o| settled_on(o, &final_master),
    )
    .await;

    // A password rotation with the Sentinels a step ahead (as a Sentinel Pod restarted by the roll
    // is): every Sentinel reopens its links with a password no Redis accepts yet, and every PING
    // is answered -NOAUTH. Sentinel authenticates a link only when it opens it, so once a Redis
    // accepts the new password (`adopt_password`) its Sentinel links must be dropped; otherwise
    // each Sentinel logs +sdown for every healthy Redis after down-after (3 s here).
    const NEW_PASSWORD: &str = "rotated-pa$$word";
    let rotated = Cluster {
        password: Some(NEW_PASSWORD),
        ..cluster
    };
    let sentinel_log = |i: usize| fs::read_to_string(temp.path().join(format!("sentinel-{i}.log"))).unwrap_or_default();
    let logged_before: Vec<usize> = (0..3).map(|i| sentinel_log(i).len()).collect();
    // The Sentinels take the set's password from clients and peers alike: nothing without it.
    let anonymous = redis_io::sentinel_failover(
        Target::sentinel(&sentinels[0].connect, None, Timeouts::default()),
        MASTER_SET,
    )
    .await;
    assert!(
        anonymous.as_ref().is_err_and(redis_io::is_auth_refused),
        "SENTINEL FAILOVER without the password is refused: {anonymous:?}"
    );
    let adopted = redis_io::adopt_sentinel_password(rotated, Some(PASSWORD)).await;
    assert!(
        adopted.len() == 3 && adopted.iter().all(|(_, outcome)| outcome.is_ok()),
        "each Sentinel refused the new password, then took it: {adopted:?}"
    );
    for password in [PASSWORD, NEW_PASSWORD] {
        let answered = redis_io::ping(Target::sentinel(
            &sentinels[0].connect,
            Some(password),
            Timeouts::default(),
        ))
        .await;
        assert!(
            answered.is_ok(),
            "until it restarts a Sentinel takes both passwords: {answered:?}"
        );
    }
    assert!(
        redis_io::tell_sentinels_password(rotated).await,
        "every Sentinel takes the new auth-pass and sentinel-pass"
    );
    // Sentinel reconnects within a tick (100 ms): its new links are refused from here on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let every_pod: Vec<String> = members.iter().map(|m| m.pod.clone()).collect();
    let adopted = redis_io::adopt_password(rotated, &every_pod, Some(PASSWORD)).await;
    assert!(
        adopted.len() == 3 && adopted.iter().all(|(_, outcome)| outcome.is_ok()),
        "each Redis refused the new password, then took it: {adopted:?}"
    );
    // Long enough for down-after to pass on a refused link (what the logs would then show).
    tokio::time::sleep(Duration::from_millis(u64::from(base.timings.down_after_ms) + 2_000)).await;
    for (i, before) in logged_before.into_iter().enumerate() {
        let log = sentinel_log(i);
        let since = log.get(before..).unwrap_or_default();
        assert!(
            since.contains("auth-pass"),
            "sentinel {i} logged the new auth-pass:\n{since}"
        );
        assert!(
            !since.contains("+sdown"),
            "sentinel {i} held a healthy Redis down after the rotation:\n{since}"
        );
    }
    wait_for(
        "rotated: the new password works everywhere and the Sentinels agree",
        Duration::from_secs(30),
        rotated,
        |o| settled_on(o, &final_master),
    )
    .await;

    // A planned failover (a roll's) while a replica is frozen (SIGSTOP, as a stalled node) under
    // a WAIT 1 writer: the operator cannot verify that replica has caught up, and Sentinel might
    // promote it from its stale cached offset, so the failover is abandoned before Sentinel is
    // asked; writes go on (the master was never paused), nothing is lost, no epoch is used.
    let frozen = (0..members.len())
        .find(|i| *i != final_index && *i != new_index)
        .expect("a third Redis");
    let epoch_before = healer::newest_epoch(&redis_io::survey(rotated).await);
    let mut writer = redis_client(redis_ports[final_index], NEW_PASSWORD)
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the master");
    let mut written = Vec::new();
    processes.signal(redis_processes[frozen].0, nix::sys::signal::Signal::SIGSTOP);
    let frozen_at = Instant::now();
    let finished = std::sync::atomic::AtomicBool::new(false);
    let attempt = async {
        let outcome = redis_io::planned_failover(rotated, &final_master, &[]).await;
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        outcome
    };
    let writes = async {
        while !finished.load(std::sync::atomic::Ordering::SeqCst) {
            let key = format!("during-frozen-{}", written.len());
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg("v")
                .query_async(&mut writer)
                .await
                .expect("SET while a replica is frozen");
            let acked: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(1000)
                .query_async(&mut writer)
                .await
                .expect("WAIT");
            if acked >= 1 {
                written.push(key);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (outcome, ()) = futures::join!(attempt, writes);
    processes.signal(redis_processes[frozen].0, nix::sys::signal::Signal::SIGCONT);
    println!(
        "planned failover with {} frozen for {:?}: {outcome:?}; {} writes acknowledged meanwhile",
        members[frozen].pod,
        frozen_at.elapsed(),
        written.len()
    );
    let error = outcome.expect_err("abandoned while a replica cannot be verified");
    assert!(
        error.to_string().contains(&members[frozen].pod) && error.to_string().contains("abandoned"),
        "{error}"
    );
    assert!(!written.is_empty(), "writes went on meanwhile");
    wait_for(
        "the frozen replica thawed: settled on the same master",
        Duration::from_secs(30),
        rotated,
        |o| settled_on(o, &final_master),
    )
    .await;
    assert_eq!(
        healer::newest_epoch(&redis_io::survey(rotated).await),
        epoch_before,
        "Sentinel was never asked"
    );
    for key in &written {
        let value: Option<String> = redis::cmd("GET").arg(key).query_async(&mut writer).await.expect("GET");
        assert_eq!(value.as_deref(), Some("v"), "{key} was acknowledged and must be there");
    }

    // Readiness as the probes see it: the master and linked replicas are ready, and so is each
    // Sentinel; a Redis that does not answer is not.
    for (i, member) in members.iter().enumerate() {
        let script = temp.path().join(format!("redis-{i}/config/{}", config::REDIS_READY));
        let (ok, output) = run_script(&script, &member.pod);
        assert!(ok, "{} ready: {output}", member.pod);
    }
    for i in 0..3 {
        let script = temp
            .path()
            .join(format!("sentinel-{i}/config/{}", config::SENTINEL_READY));
        let (ok, output) = run_script(&script, &format!("{MASTER_SET}-sentinel-{i}"));
        assert!(ok, "sentinel {i} ready: {output}");
    }
    let absent = temp.path().join("absent");
    let absent_rendering = rendering(&base, &absent, free_port(), 0);
    write_files(&absent, redis_config_data(&absent_rendering).expect("renders"));
    let (ok, output) = run_script(&absent.join("config").join(config::REDIS_READY), "itest-9");
    assert!(!ok, "a Redis that does not answer is not ready: {output}");

    // The master's preStop hands over: the Sentinels fail over before the process would stop.
    let prestop = temp
        .path()
        .join(format!("redis-{final_index}/config/{}", config::REDIS_PRESTOP));
    let started = Instant::now();
    let (ok, output) = run_script(&prestop, &final_master);
    let handover = started.elapsed();
    assert!(ok, "preStop: {output}");
    assert!(output.contains("handed over to 127.0.0.1:"), "preStop output: {output}");
    let old_address = &members[final_index].announced;
    // The preStop returns once the Sentinel with the newest config-epoch (the failover's leader)
    // names another master; the others learn it from the leader's hello messages (every 2 s).
    // The old master stays master until its process stops (the kubelet's next step), its writes
    // paused; what matters is that the Sentinels, and so every client asking them, moved on.
    let asked = Instant::now();
    let (survey, named) = loop {
        let survey = redis_io::survey(cluster).await;
        let named: Vec<_> = survey
            .sentinels
            .iter()
            .filter_map(|s| s.view.as_ref().and_then(|v| v.master.clone()))
            .collect();
        let moved_on = named.len() >= 2 && named.iter().all(|m| m != old_address);
        if moved_on || asked.elapsed() > Duration::from_secs(10) {
            break (survey, named);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "preStop of {final_master} handed over in {handover:?}; {:?} later the Sentinels name {named:?}",
        asked.elapsed()
    );
    assert!(
        named.len() >= 2 && named.iter().all(|m| m != old_address),
        "within 10 s of the handover a Sentinel quorum names a new master: {survey:#?}"
    );
    let promoted = survey
        .redis
        .iter()
        .find(|p| Some(&p.address) == named.first())
        .and_then(|p| p.replication.as_ref())
        .map(|r| r.role);
    assert_eq!(promoted, Some(Role::Master), "the named master answers as master");
    assert!(handover < Duration::from_secs(20), "preStop bounded: {handover:?}");
    drop(processes);
}

/// A client of the Redis on 127.0.0.1:`port`, authenticating with `password`.
fn redis_client(port: u16, password: &str) -> redis::Client {
    let info = redis::IntoConnectionInfo::into_connection_info(("127.0.0.1", port)).expect("info");
    let settings = info
        .redis_settings()
        .clone()
        .set_skip_set_lib_name()
        .set_password(password);
    redis::Client::open(info.set_redis_settings(settings)).expect("client")
}

/// Carries out every Redis/Sentinel action of a plan (labels have no Pods here).
async fn perform_all(plan: &healer::Plan, cluster: Cluster<'_>) {
    for action in &plan.actions {
        let performed = redis_io::perform(action, cluster)
            .await
            .unwrap_or_else(|e| panic!("{action:?}: {e}"));
        println!("performed {action:?}: {performed:?}");
    }
}

/// Runs a rendered script as a probe or hook would (bounded by `timeout`), with the Pod's env.
fn run_script(script: &Path, pod: &str) -> (bool, String) {
    let output = Command::new("timeout")
        .arg("30")
        .arg("/bin/sh")
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env(config::ENV_POD_NAME, pod)
        .env(config::ENV_PASSWORD, PASSWORD)
        .env(config::ENV_REDISCLI_AUTH, PASSWORD)
        .output()
        .expect("run script");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}
