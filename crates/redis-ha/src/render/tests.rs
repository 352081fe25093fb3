//! The renderers' unit tests; the scripts' functions run under /bin/sh with stubs.
use super::{
    scripts::{
        redis_prestop_script, redis_ready_script, redis_start_script, sentinel_init_script, sentinel_ready_script,
        sh_quote,
    },
    *,
};
use crate::{
    config::{
        BOOTSTRAP_MASTER_KEY, BOOTSTRAP_REPLICAS_KEY, ConfigError, Endpoint, SentinelTimings, check_extra_config,
        check_password,
    },
    crd::RedisHA,
};

fn rha(yaml_spec: &str) -> RedisHA {
    serde_yaml::from_str(&format!(
        "apiVersion: cache.capstan.dev/v1alpha1\nkind: RedisHA\nmetadata: {{name: cache, namespace: apps}}\nspec: {yaml_spec}\n"
    ))
    .expect("valid RedisHA")
}

fn rendering(yaml_spec: &str) -> Rendering {
    Rendering::for_redis_ha(&rha(yaml_spec), "cache", "apps", "cluster.local")
}

/// The header's `NAME='value'` line of a rendered script.
fn header_line<'a>(script: &'a str, name: &str) -> &'a str {
    script
        .lines()
        .find(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with('=')))
        .unwrap_or_else(|| panic!("{name} is set in the header"))
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn redis_conf_owns_addresses_and_requires_a_replica_when_there_are_several() {
    let conf = redis_conf(&rendering("{}")).expect("renders");
    let lines = lines(&conf);
    for expected in [
        "bind * -::*",
        "port 6379",
        "protected-mode no",
        "dir /data",
        "appendonly no",
    ] {
        assert!(lines.contains(&expected), "{expected:?} in\n{conf}");
    }
    let directives = lines.join("\n");
    assert!(
        !directives.contains("replicaof"),
        "the role is chosen at start, not in the ConfigMap"
    );
    assert!(!directives.contains("requirepass") && !directives.contains("masterauth"));
}

#[test]
fn the_redis_count_is_no_part_of_the_rendered_files_and_storage_turns_on_the_aof() {
    let three = redis_config_data(&rendering("{replicas: 3}")).expect("renders");
    let one = redis_config_data(&rendering("{replicas: 1}")).expect("renders");
    assert_eq!(three, one, "a scale changes no file, so no template and no roll");
    let conf = redis_conf(&rendering("{replicas: 1, storage: {size: 1Gi}}")).expect("renders");
    assert!(lines(&conf).contains(&"appendonly yes"));
    assert!(
        !conf.contains("min-replicas-to-write"),
        "added at start from the record"
    );
}

#[test]
fn writes_need_a_replica_unless_the_record_says_one_redis() {
    let script = redis_start_script(&rendering("{}"));
    let start = script.find("start() {").expect("defined");
    let end = start + script[start..].find("\n}\n").expect("ends") + 3;
    let effective = |record: Option<&str>| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("redis.conf"), "port 6379\n").expect("conf");
        if let Some(count) = record {
            std::fs::write(dir.path().join(BOOTSTRAP_REPLICAS_KEY), count).expect("record");
        }
        let d = dir.path().display();
        let program = format!(
            "CONFIG_DIR='{d}'\nRUNTIME_DIR='{d}'\nBOOTSTRAP_DIR='{d}'\nRUNTIME_CONF='{d}/effective.conf'\nANNOUNCE_HOST=h\nREDIS_PORT=6379\n\
                 {}\n{}\n\
             log() {{ :; }}\nconf_quote() {{ printf '%s' \"$1\"; }}\n{}start master\n",
            header_line(&script, "BOOTSTRAP_REPLICAS_KEY"),
            header_line(&script, "MIN_REPLICAS_MAX_LAG"),
            script[start..end].replace("exec redis-server \"$RUNTIME_CONF\"", ":")
        );
        let status = std::process::Command::new("/bin/sh")
            .args(["-c", &program])
            .status()
            .expect("/bin/sh runs");
        assert!(status.success());
        std::fs::read_to_string(dir.path().join("effective.conf")).expect("written")
    };
    let one = effective(Some("1"));
    assert!(
        one.contains("min-replicas-to-write 0") && !one.contains("max-lag"),
        "{one}"
    );
    for record in [Some("3"), None, Some("junk")] {
        let conf = effective(record);
        assert!(
            conf.contains("min-replicas-to-write 1\nmin-replicas-max-lag 5"),
            "{record:?}: {conf}"
        );
    }
}

#[test]
fn extra_config_is_appended_after_the_operators_directives() {
    let conf = redis_conf(&rendering(
        "{config: {maxmemory: 100mb, maxmemory-policy: allkeys-lru}}",
    ))
    .expect("renders");
    let lines = lines(&conf);
    let port = lines.iter().position(|l| *l == "port 6379").expect("port");
    let maxmemory = lines.iter().position(|l| *l == "maxmemory 100mb").expect("maxmemory");
    assert!(port < maxmemory);
    assert!(lines.contains(&"maxmemory-policy allkeys-lru"));
}

#[test]
fn owned_directives_are_refused_with_their_name() {
    for directive in ["bind", "port", "replicaof", "slaveof", "dir", "requirepass", "Include"] {
        let config = BTreeMap::from([(directive.to_owned(), "x".to_owned())]);
        assert_eq!(
            check_extra_config(&config),
            Err(ConfigError::OwnedDirective(directive.to_owned()))
        );
    }
    let config = BTreeMap::from([("rename-command".to_owned(), "CONFIG \"\"".to_owned())]);
    let error = check_extra_config(&config).expect_err("owned");
    assert!(error.to_string().contains("spec.config.rename-command"), "{error}");
    assert!(error.to_string().contains("operator sets this directive"), "{error}");
}

#[test]
fn values_that_break_replication_or_failover_are_refused_with_why() {
    for directive in ["replica-priority", "slave-priority"] {
        let config = BTreeMap::from([(directive.to_owned(), "0".to_owned())]);
        assert_eq!(
            check_extra_config(&config),
            Err(ConfigError::OwnedDirective(directive.to_owned())),
            "the operator sets priorities for planned failovers"
        );
    }
    for (name, value, why) in [
        ("replica-read-only", "no", "writable replicas"),
        ("slave-read-only", "NO", "writable replicas"),
        ("maxclients", "10", "at least 64"),
        ("maxclients", "many", "at least 64"),
    ] {
        let config = BTreeMap::from([(name.to_owned(), value.to_owned())]);
        let error = check_extra_config(&config).expect_err("refused");
        assert!(
            matches!(&error, ConfigError::BreaksFailover { name: n, .. } if n == name),
            "{error}"
        );
        assert!(error.to_string().contains(why), "{error}");
    }
    for (name, value) in [
        ("replica-read-only", "yes"),
        ("maxclients", "10000"),
        ("maxmemory", "64mb"),
    ] {
        let config = BTreeMap::from([(name.to_owned(), value.to_owned())]);
        assert_eq!(check_extra_config(&config), Ok(()), "{name} {value}");
    }
}

#[test]
fn a_value_cannot_smuggle_in_another_directive() {
    let config = BTreeMap::from([("maxmemory".to_owned(), "1mb\nreplicaof evil 6379".to_owned())]);
    assert_eq!(
        check_extra_config(&config),
        Err(ConfigError::InvalidValue("maxmemory".into()))
    );
    let config = BTreeMap::from([("max memory".to_owned(), "1mb".to_owned())]);
    assert_eq!(
        check_extra_config(&config),
        Err(ConfigError::InvalidName("max memory".into()))
    );
    let mut r = rendering("{}");
    r.extra_config = BTreeMap::from([("port".to_owned(), "7000".to_owned())]);
    assert_eq!(redis_conf(&r), Err(ConfigError::OwnedDirective("port".into())));
}

#[test]
fn passwords_must_survive_sentinels_config_rewrite() {
    assert_eq!(
        check_password(b"s3cret-with_symbols!@#$%^&*()=+[]{}<>?/.,;:~`|"),
        Ok(())
    );
    assert_eq!(check_password(b"with space"), Err(ConfigError::InvalidPassword));
    assert_eq!(check_password(b"with\"quote"), Err(ConfigError::InvalidPassword));
    assert_eq!(check_password(b"with'quote"), Err(ConfigError::InvalidPassword));
    assert_eq!(check_password(b"back\\slash"), Err(ConfigError::InvalidPassword));
    assert_eq!(check_password(b"pw\n"), Err(ConfigError::InvalidPassword));
    assert_eq!(check_password(b""), Err(ConfigError::InvalidPassword));
    assert_eq!(check_password(&[0xff, 0xfe]), Err(ConfigError::InvalidPassword));
}

#[test]
fn sentinel_conf_monitors_by_hostname_with_bounded_timings() {
    let conf = sentinel_conf(&rendering("{sentinel: {replicas: 5}}"));
    let lines = lines(&conf);
    for expected in [
        "port 26379",
        "dir /run/redis-ha",
        "sentinel resolve-hostnames yes",
        "sentinel announce-hostnames yes",
        "sentinel announce-ip @ANNOUNCE_HOST@",
        "sentinel monitor cache @MASTER_HOST@ @MASTER_PORT@ 3",
        "sentinel down-after-milliseconds cache 4000",
        "sentinel failover-timeout cache 20000",
        "sentinel parallel-syncs cache 1",
    ] {
        assert!(lines.contains(&expected), "{expected:?} in\n{conf}");
    }
    let resolve = lines
        .iter()
        .position(|l| l.contains("resolve-hostnames"))
        .expect("resolve");
    let monitor = lines
        .iter()
        .position(|l| l.contains("sentinel monitor"))
        .expect("monitor");
    assert!(
        resolve < monitor,
        "a hostname in `monitor` needs resolve-hostnames first"
    );
    let timings = SentinelTimings::default();
    assert!((3_000..=5_000).contains(&timings.down_after_ms));
    assert!(timings.failover_timeout_ms <= 60_000);
}

#[test]
fn scripts_use_stable_fqdns_and_never_hold_the_password() {
    let r = rendering("{auth: {secretName: redis-auth}}");
    assert_eq!(
        r.bootstrap_master,
        Endpoint::new("cache-0.cache-headless.apps.svc.cluster.local", 6379)
    );
    assert_eq!(
        r.sentinels[2],
        Endpoint::new("cache-sentinel-2.cache-sentinel-headless.apps.svc.cluster.local", 26379)
    );
    let start = redis_start_script(&r);
    assert!(start.contains(r#"ANNOUNCE_HOST="${POD_NAME}"'.cache-headless.apps.svc.cluster.local'"#));
    assert!(start.contains("cache-sentinel-1.cache-sentinel-headless.apps.svc.cluster.local 26379"));
    assert!(start.contains(r#"echo "replica-announce-ip $ANNOUNCE_HOST""#));
    assert!(
        start.contains("${REDIS_PASSWORD:-}"),
        "the password comes from the environment"
    );
    let init = sentinel_init_script(&r);
    assert!(init.contains(r#"ANNOUNCE_HOST="${POD_NAME}"'.cache-sentinel-headless.apps.svc.cluster.local'"#));
    assert!(init.contains("'cache-0.cache-headless.apps.svc.cluster.local 6379'"));
    for line in ["requirepass $quoted", "sentinel sentinel-pass $quoted"] {
        assert!(init.contains(line), "the Sentinel requires the password: {line}");
    }
    assert!(
        !start.contains("env -u"),
        "the scripts send the password to the Sentinels"
    );
    let domain = Rendering::for_redis_ha(&rha("{}"), "cache", "apps", "corp.example");
    assert!(redis_start_script(&domain).contains("cache-headless.apps.svc.corp.example"));
}

#[test]
fn the_start_script_hands_over_instead_of_serving_as_a_returning_master() {
    let script = redis_start_script(&rendering("{}"));
    let failover = script.find("request_failover \"$asked\"").expect("asks for a failover");
    let named_me = script
        .find("if ! is_me \"$1\" \"$2\"; then\n  start \"$1 $2\"")
        .expect("replica path");
    assert!(named_me < failover);
    assert!(script.contains("SENTINEL FAILOVER"));
    assert!(script.contains("WAITING_MASTER_HOST='capstan-waiting-for-operator.invalid'"));
    assert!(!script.contains("replicaof no one"), "never elects itself");
}

/// Runs the start script's shell function `name` as `call`, with `sentinel_cli` stubbed:
/// each Sentinel host `s<i>` answers `replies[i]` to every command.
fn run_start_function(name: &str, call: &str, replies: &[&str]) -> String {
    let script = redis_start_script(&rendering("{}"));
    let function = |f: &str| {
        let start = script.find(&format!("{f}() {{")).expect("defined");
        let end = start + script[start..].find("\n}\n").expect("ends") + 3;
        script[start..end].to_owned()
    };
    let sentinels: Vec<String> = (0..replies.len()).map(|i| format!("s{i} 26379")).collect();
    let cases: String = replies
        .iter()
        .enumerate()
        .map(|(i, reply)| format!("s{i}) printf '{reply}' ;; "))
        .collect();
    let program = format!(
        "SENTINELS='{}'\nMASTER_SET=m\nlog() {{ :; }}\nsentinel_cli() {{ case \"$3\" in {cases} esac; }}\n{}{call}\n",
        sentinels.join("\n"),
        function(name),
    );
    let output = std::process::Command::new("/bin/sh")
        .args(["-c", &program])
        .output()
        .expect("/bin/sh runs");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn a_returning_master_asks_only_once_every_answering_sentinel_sees_it_down() {
    let flags = |f: &str| format!("name\\nm\\nflags\\n{f}\\nnum-slaves\\n2\\n");
    let judge = |replies: &[&str]| run_start_function("sentinels_judgement", "sentinels_judgement", replies);
    let (up, down, odown, failing) = (
        flags("master"),
        flags("master,s_down"),
        flags("master,s_down,o_down"),
        flags("master,s_down,o_down,failover_in_progress"),
    );
    assert_eq!(judge(&[&up, &up, &up]), "up");
    assert_eq!(
        judge(&[&down, &up, &odown]),
        "up",
        "one Sentinel still sees it: no verdict"
    );
    assert_eq!(judge(&[&down, &odown, &down]), "down");
    assert_eq!(
        judge(&[&down, "", &odown]),
        "down",
        "a Sentinel that does not answer has no say"
    );
    assert_eq!(
        judge(&[&down, &failing, &up]),
        "failover",
        "the Sentinels fail over on their own"
    );
    assert_eq!(judge(&["", "", ""]), "up", "nobody answering is no reason to ask");
    let script = redis_start_script(&rendering("{}"));
    let waiting = script.find("case \"$(sentinels_judgement)\" in").expect("judged");
    let asking = script.find("request_failover \"$asked\"").expect("asks");
    assert!(waiting < asking, "the request comes under the judgement");
}

#[test]
fn a_repeated_failover_request_goes_through_another_sentinel_first() {
    let script = redis_start_script(&rendering("{}"));
    let start = script.find("request_failover() {").expect("defined");
    let end = start + script[start..].find("\n}\n").expect("ends") + 3;
    let first_asked = |skip: usize| {
        let program = format!(
            "SENTINELS='s0 26379\ns1 26379\ns2 26379'\nMASTER_SET=m\nlog() {{ :; }}\n\
             sentinel_cli() {{ echo \"$2\" >&2; }}\n{}request_failover {skip}\n",
            &script[start..end]
        );
        let output = std::process::Command::new("/bin/sh")
            .args(["-c", &program])
            .output()
            .expect("/bin/sh runs");
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    // The stub answers nothing (no OK), so every Sentinel is asked, in rotated order.
    assert_eq!(
        run_order(&first_asked(0)),
        ["s0", "s1", "s2"].map(String::from).to_vec()
    );
    assert_eq!(
        run_order(&first_asked(1)),
        ["s1", "s2", "s0"].map(String::from).to_vec()
    );
    assert_eq!(
        run_order(&first_asked(2)),
        ["s2", "s0", "s1"].map(String::from).to_vec()
    );
    assert_eq!(
        run_order(&first_asked(4)),
        ["s1", "s2", "s0"].map(String::from).to_vec()
    );
}

fn run_order(out: &str) -> Vec<String> {
    out.lines().map(str::to_owned).collect()
}

#[test]
fn sentinels_that_all_restart_seed_the_last_master_the_operator_verified() {
    let r = rendering("{}");
    let script = sentinel_init_script(&r);
    let start = script.find("recorded=$(cat").expect("reads the record");
    let end = start + script[start..].find("\nset -- $master\n").expect("then uses it");
    let choose = |recorded: Option<&str>, peers_name: &str| {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(recorded) = recorded {
            std::fs::write(dir.path().join(BOOTSTRAP_MASTER_KEY), recorded).expect("record");
        }
        let program = format!(
            "MASTER_SET=cache\nREDIS_PORT=6379\nBOOTSTRAP_DIR='{}'\nREDIS_HOST_SUFFIX={}\n{}\n{}\nlog() {{ :; }}\nmaster='{peers_name}'\n{}\necho \"$master\"\n",
            dir.path().display(),
            sh_quote(&r.redis_host_suffix),
            header_line(&script, "BOOTSTRAP_MASTER_KEY"),
            header_line(&script, "BOOTSTRAP_MASTER"),
            &script[start..end]
        );
        let output = std::process::Command::new("/bin/sh")
            .args(["-c", &program])
            .output()
            .expect("/bin/sh runs");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let host = |pod: &str| format!("{pod}.cache-headless.apps.svc.cluster.local 6379");
    assert_eq!(choose(Some("cache-2"), ""), host("cache-2"), "the recorded master");
    assert_eq!(choose(None, ""), host("cache-0"), "first creation: ordinal 0");
    assert_eq!(
        choose(Some("cache-2"), "peer 6379"),
        "peer 6379",
        "a peer that answers wins"
    );
    for hostile in ["other-1", "cache-x", "cache-1; reboot", "cache-1 evil.example 6379", ""] {
        assert_eq!(
            choose(Some(hostile), ""),
            host("cache-0"),
            "{hostile:?} is not a Pod of this set"
        );
    }
}

#[test]
fn the_prestop_hook_looks_for_the_handover_often_and_within_the_pause() {
    let script = redis_prestop_script(&rendering("{}"));
    assert!(
        script.contains("PRESTOP_PAUSE_MS='15000'\n") && script.contains("CLIENT PAUSE \"$PRESTOP_PAUSE_MS\" WRITE"),
        "{script}"
    );
    assert!(
        script.contains("PRESTOP_POLLS='75'\n")
            && script.contains("PRESTOP_POLL_SECONDS='0.2'\n")
            && script.contains("while [ \"$waited\" -lt \"$PRESTOP_POLLS\" ]; do\n  sleep \"$PRESTOP_POLL_SECONDS\"\n"),
        "{script}"
    );
    assert!(
        script.contains("PRESTOP_REASK_POLLS='5'\n") && script.contains("$((waited % PRESTOP_REASK_POLLS))"),
        "asks again each second: {script}"
    );
}

#[test]
fn every_redis_cli_call_is_bounded_by_timeout() {
    let r = rendering("{}");
    for script in [
        redis_start_script(&r),
        redis_ready_script(&r),
        redis_prestop_script(&r),
        sentinel_init_script(&r),
        sentinel_ready_script(&r),
    ] {
        for line in script
            .lines()
            .filter(|l| l.contains("redis-cli ") && !l.trim_start().starts_with('#'))
        {
            assert!(line.contains("timeout 3 redis-cli"), "unbounded call: {line}");
        }
    }
}

#[test]
fn every_script_parses_with_bin_sh() {
    let r = rendering("{auth: {secretName: redis-auth}}");
    let scripts = redis_config_data(&r)
        .expect("renders")
        .into_iter()
        .chain(sentinel_config_data(&r))
        .filter(|(key, _)| key.ends_with(".sh"));
    let mut checked = 0;
    for (key, script) in scripts {
        let output = std::process::Command::new("/bin/sh")
            .args(["-n", "-c", &script])
            .output()
            .expect("/bin/sh runs");
        assert!(
            output.status.success(),
            "{key}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn shell_quoting_survives_single_quotes() {
    assert_eq!(sh_quote("a'b"), r"'a'\''b'");
}

#[test]
fn the_shellcheck_samples_hold_every_script_with_and_without_a_password() {
    let samples = sample_scripts();
    for case in ["plain", "auth-storage"] {
        let mut files: Vec<&str> = samples
            .iter()
            .filter_map(|(name, _)| name.strip_prefix(case)?.strip_prefix('/'))
            .collect();
        files.sort_unstable();
        assert_eq!(
            files,
            [REDIS_PRESTOP, REDIS_READY, REDIS_START, SENTINEL_INIT, SENTINEL_READY],
            "{case}"
        );
    }
    let start = |case: &str| {
        samples
            .iter()
            .find(|(name, _)| *name == format!("{case}/{REDIS_START}"))
            .map(|(_, text)| text.as_str())
            .expect("rendered")
    };
    assert!(start("auth-storage").starts_with("#!/bin/sh\n"));
    assert_eq!(
        start("plain"),
        start("auth-storage"),
        "the password comes from the environment"
    );
}
