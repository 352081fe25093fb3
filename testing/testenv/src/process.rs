//! Child processes that cannot outlive the process that started them.
//!
//! A `static` shared control plane is never dropped, and a test binary may be killed outright, so
//! cleanup cannot rely on `Drop`. Every child therefore gets `PR_SET_PDEATHSIG(SIGKILL)`. The kernel
//! sends that signal when the *thread* that forked the child exits, not the process, so all children
//! are forked by one supervisor thread that lives as long as the process. Test threads come and go;
//! forking from them would kill a shared etcd as soon as the first test finished.
//!
//! Children also get their own process group, so a Ctrl-C in the terminal reaches only our process,
//! which then stops them in order (`cargo xtask dev`) or lets the death signal do it (tests).

// SAFETY: this is the one module that needs `unsafe`: `pre_exec` (the closure runs in the forked
// child, where only async-signal-safe calls are allowed; it makes only raw `prctl`, `getppid` and
// `setpgid` calls and builds errors without allocating), `kill(2)` on pids of children we have not
// reaped (so the pid cannot have been reused), and `atexit(3)` with a plain `extern "C" fn`.
#![allow(unsafe_code)]

use std::{
    io,
    os::unix::process::CommandExt,
    process::{Child, Command},
    sync::{OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

static SUPERVISOR: OnceLock<Result<mpsc::Sender<SpawnRequest>, String>> = OnceLock::new();

/// Spawns `command` from the supervisor thread, so the child is SIGKILLed when this process exits
/// for any reason, and puts it in a process group of its own.
pub fn spawn(command: Command) -> io::Result<Child> {
    let supervisor = SUPERVISOR
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            thread::Builder::new()
                .name("capstan-testenv-supervisor".into())
                // The sender lives in a static and is never dropped, so this loop never ends, which
                // is exactly what keeps the children's parent thread alive.
                .spawn(move || {
                    for request in rx {
                        let _ = request.reply.send(spawn_here(request.command));
                    }
                })
                .map(|_| tx)
                .map_err(|e| format!("cannot start the process supervisor thread: {e}"))
        })
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))?;

    let (reply, answer) = mpsc::channel();
    supervisor
        .send(SpawnRequest { command, reply })
        .map_err(|_| io::Error::other("the process supervisor thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the process supervisor thread did not answer"))?
}

fn spawn_here(mut command: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: see the module comment; the closure only makes async-signal-safe system calls.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then no signal would ever come.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Stops children: SIGTERM to all at once, up to `grace` for them to exit, then SIGKILL. Reaps
/// them all, so their pids are gone from `/proc` when this returns.
pub fn terminate(children: &mut [&mut Child], grace: Duration) {
    for child in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: the child is not reaped yet (try_wait just said so), so its pid still names it.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut running = 0;
        for child in children.iter_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                running += 1;
            }
        }
        if running == 0 || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    for child in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// Runs `hook` when the process exits normally (`exit(3)`, including returning from `main`), which
/// is when a test harness finishes; statics are not dropped then.
pub(crate) fn at_exit(hook: extern "C" fn()) {
    // SAFETY: `hook` is a plain function without captured state; registering it has no other effect.
    unsafe {
        libc::atexit(hook);
    }
}

/// Whether a process with this pid exists (a zombie counts: it has not been reaped).
pub fn is_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
