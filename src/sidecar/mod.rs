//! `a8registry sidecar`: registers one application instance, heartbeats for it while it is
//! healthy, registers it again after registry outages, and supervises it (the sidecar contract,
//! `spec/sidecar.md`). Everything runs on plain threads: no may coroutine is involved.
//!
//! ```text
//! main thread: signals (SIGTERM, SIGINT, SIGCHLD) ─► reaper ─► supervised processes
//!      │ stop                                          ▲ exit status
//!      ▼                                               │
//! Board (health results, stop) ◄── check threads (http | tcp | file)
//!      │ wakes
//!      ▼
//! agent thread: protocol (pure: requests, answers) ─► client (ureq, 5 s bound) ─► registry
//! ```
//!
//! - [`settings`]: the configuration, merged from flags, environment and the `--config` file
//!   ([`yaml`] reads its YAML subset), validated whole before anything starts.
//! - [`protocol`]: the Amalgam8 and Eureka requests and the meaning of their answers, checked
//!   against the library's own decoders.
//! - [`agent`]: registration, heartbeats, backoff, deregistration.
//! - [`health`]: the checks and the health they add up to.
//! - [`process`]: spawning, reaping (also as process 1), signals.
//! - [`resolve`]: name lookups with a deadline, for the checks and the agent.

pub mod agent;
pub mod client;
pub mod health;
pub mod process;
pub mod protocol;
pub mod resolve;
pub mod settings;
pub mod yaml;

pub use settings::{resolve, Given, SidecarConfig};

use self::health::Board;
use self::process::{send_signal, signal_name, wait_signal, Reaper};
use self::settings::{AppCommand, OnExit};
use crate::{error, info, log, warn};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The registration agent begins this long after the start, to give the application time to
/// listen (as the original).
const START_DELAY: Duration = Duration::from_secs(1);
/// How long supervised processes get to exit after their signal before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// Longest wait for the agent to finish at stop: a request in flight and the deregistration,
/// each bounded by the request timeout, with a margin.
const DEREGISTER_WAIT: Duration = Duration::from_secs(11);
/// How often the main thread looks at its children when no signal comes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One supervised process.
struct App {
    command: AppCommand,
    /// `None` when it could not be started or once it has exited.
    pid: Option<libc::pid_t>,
}

impl App {
    fn describe(&self) -> String {
        self.command
            .argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.pid {
            send_signal(pid, signal, self.command.kill_group);
        }
    }
}

/// Why the sidecar stops.
enum Stop {
    Signal(libc::c_int),
    /// A `terminate` process exited (or could not start) with this status.
    AppExited(i32),
    /// The sidecar could not start a part it needs (a health check's thread).
    Failed,
}

/// Runs the sidecar until a signal or the application's exit; returns the exit status.
pub fn run(config: SidecarConfig) -> u8 {
    // Before any thread starts, so that every thread inherits the blocked signals.
    process::take_over_signals();
    if let Err(e) = log::init(config.log_level, config.log_format) {
        eprintln!("a8registry sidecar: cannot start the log thread: {e}");
        return 1;
    }
    let started = Instant::now();
    for line in &config.warnings {
        warn!(line);
    }
    log_start(&config);

    let reaper = Arc::new(Reaper::default());
    let board = Arc::new(Board::new(config.health_checks.len()));
    let mut apps = Vec::new();
    let mut stop = None;
    for command in &config.commands {
        let mut app = App {
            command: command.clone(),
            pid: None,
        };
        info!(format!("Launching app {}", app.describe()));
        match launch(&reaper, command) {
            Ok(pid) => app.pid = Some(pid),
            Err(e) if command.on_exit == OnExit::Terminate => {
                error!(format!("cannot start app {}: {e}", app.describe()));
                error!("App terminated with exit code 1");
                stop.get_or_insert(Stop::AppExited(1));
            }
            Err(e) => warn!(format!("cannot start app {}: {e}", app.describe())),
        }
        apps.push(app);
    }

    let agent = agent::Agent::new(&config, board.clone());
    let checks = config.health_checks.clone();
    let (agent_board, agent_reaper) = (board.clone(), reaper.clone());
    let spawned = std::thread::Builder::new()
        .name("agent".into())
        .spawn(move || {
            let begin = started + START_DELAY;
            // The checks begin with the agent: their first run decides the first registration.
            let mut state = agent_board.lock();
            while !state.stopping && Instant::now() < begin {
                state = agent_board.wait(state, Some(begin));
            }
            drop(state);
            if let Err(e) = health::start_checks(&agent_board, &agent_reaper, &checks) {
                error!(format!(
                    "Cannot start health check {}: {}; the sidecar stops",
                    e.check, e.error
                ));
                agent_board.fail();
            }
            agent.run(begin);
        });
    if let Err(e) = spawned {
        error!("cannot start the registration agent", "error" => e);
        return 1;
    }

    let stop = match stop {
        Some(stop) => stop,
        None => supervise(&board, &reaper, &mut apps),
    };
    let code = match stop {
        Stop::Signal(signal) => {
            info!(format!("Intercepted signal {}", signal_name(signal)));
            // S12: deregister first, then tell the application.
            stop_agent(&board, &reaper, &mut apps);
            for app in &apps {
                app.signal(signal);
            }
            wind_down(&reaper, &mut apps);
            0
        }
        Stop::AppExited(code) => {
            stop_agent(&board, &reaper, &mut apps);
            for app in &apps {
                app.signal(libc::SIGTERM);
            }
            wind_down(&reaper, &mut apps);
            code
        }
        Stop::Failed => {
            stop_agent(&board, &reaper, &mut apps);
            for app in &apps {
                app.signal(libc::SIGTERM);
            }
            wind_down(&reaper, &mut apps);
            1
        }
    };
    info!(format!("Shutting down with exit code {code}"));
    log::flush();
    u8::try_from(code).unwrap_or(u8::MAX)
}

fn log_start(config: &SidecarConfig) {
    let host = config
        .endpoint_host
        .as_deref()
        .unwrap_or("(the host's address)");
    let checks: Vec<String> = config.health_checks.iter().map(|c| c.to_string()).collect();
    let commands: Vec<String> = config
        .commands
        .iter()
        .map(|c| {
            c.argv
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    info!(
        "a8registry sidecar starting",
        "service" => config.service_name,
        "tags" => config.tags.join(","),
        "endpoint" => format!("{} {host}:{}", config.endpoint_type.as_str(), config.endpoint_port),
        "registry_url" => config.registry_url,
        "registry_token" => config.registry_token,
        "protocol" => config.protocol.name(),
        "ttl" => format!("{}s", config.ttl_secs),
        "checks" => checks.join(", "),
        "command" => commands.join("; ")
    );
}

/// Starts one supervised process in its own process group, with the sidecar's stdio.
fn launch(reaper: &Reaper, app: &AppCommand) -> std::io::Result<libc::pid_t> {
    let (program, args) = app
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut command = Command::new(program);
    command.args(args).process_group(0);
    for (name, value) in &app.env {
        command.env(name, value);
    }
    reaper.spawn(&mut command)
}

/// Collects exited processes; returns the status of a `terminate` one that exited.
fn collect_exits(reaper: &Reaper, apps: &mut [App]) -> Option<i32> {
    reaper.reap();
    let mut terminated = None;
    for app in apps.iter_mut() {
        let Some(pid) = app.pid else { continue };
        let Some(status) = reaper.take(pid) else {
            continue;
        };
        app.pid = None;
        let code = process::exit_code(status);
        let line = format!("App terminated with exit code {code}");
        match app.command.on_exit {
            OnExit::Terminate => {
                if code == 0 {
                    info!(line, "app" => app.describe());
                } else {
                    error!(line, "app" => app.describe());
                }
                terminated.get_or_insert(code);
            }
            OnExit::Ignore => warn!(line, "app" => app.describe()),
        }
    }
    terminated
}

/// The main loop: waits for a stop signal, the exit of a `terminate` process or a failure to
/// start a part of the sidecar.
fn supervise(board: &Board, reaper: &Reaper, apps: &mut [App]) -> Stop {
    loop {
        if let Some(signal @ (libc::SIGTERM | libc::SIGINT)) = wait_signal(POLL_INTERVAL) {
            return Stop::Signal(signal);
        }
        if let Some(code) = collect_exits(reaper, apps) {
            return Stop::AppExited(code);
        }
        if board.lock().failed {
            return Stop::Failed;
        }
    }
}

/// Stops the checks and heartbeats and waits (boundedly) for the deregistration. Signals that
/// come meanwhile are forwarded to the processes.
fn stop_agent(board: &Board, reaper: &Reaper, apps: &mut [App]) {
    board.stop();
    let deadline = Instant::now() + DEREGISTER_WAIT;
    while !board.lock().agent_done && Instant::now() < deadline {
        if let Some(signal @ (libc::SIGTERM | libc::SIGINT)) =
            wait_signal(Duration::from_millis(20))
        {
            info!(format!("Intercepted signal {}", signal_name(signal)));
            for app in apps.iter() {
                app.signal(signal);
            }
        }
        collect_exits(reaper, apps);
    }
}

/// Waits up to the grace for the processes to exit, forwarding further signals, then SIGKILLs
/// what is left.
fn wind_down(reaper: &Reaper, apps: &mut [App]) {
    let deadline = Instant::now() + KILL_GRACE;
    while apps.iter().any(|a| a.pid.is_some()) && Instant::now() < deadline {
        if let Some(signal @ (libc::SIGTERM | libc::SIGINT)) =
            wait_signal(Duration::from_millis(20))
        {
            info!(format!("Intercepted signal {}", signal_name(signal)));
            for app in apps.iter() {
                app.signal(signal);
            }
        }
        collect_exits(reaper, apps);
    }
    for app in apps.iter() {
        if app.pid.is_some() {
            warn!(format!("App still running after {KILL_GRACE:?}: killed"), "app" => app.describe());
            app.signal(libc::SIGKILL);
        }
    }
    // Reap them, so that nothing is left a zombie while the last lines are written.
    let deadline = Instant::now() + Duration::from_millis(500);
    while apps.iter().any(|a| a.pid.is_some()) && Instant::now() < deadline {
        let _ = wait_signal(Duration::from_millis(20));
        collect_exits(reaper, apps);
    }
}
