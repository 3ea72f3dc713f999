//! Health checks (sidecar contract §4): each check runs on its own plain thread, once when the
//! registration agent begins and then every interval, and records its latest result on the
//! [`Board`] the agent waits on.

use super::client;
use super::process::Reaper;
use super::resolve::resolve;
use super::settings::{HealthCheck, Probe};
use crate::{info, warn};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a killed check command may take to be reaped before the run is given up.
const KILL_REAP_WAIT: Duration = Duration::from_secs(1);

/// What the checks say about the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Some check has not run yet and none failed: do not register.
    Unknown,
    /// The latest run of every check passed (or there are no checks).
    Healthy,
    /// The latest run of some check failed.
    Unhealthy,
}

/// The state the agent and the check threads share, under one lock.
pub struct State {
    /// Set once when the sidecar stops: every thread winds down.
    pub stopping: bool,
    /// The latest result of each check; `None` before its first run.
    results: Vec<Option<Result<(), String>>>,
    /// The agent has deregistered (or had nothing to deregister) and finished.
    pub agent_done: bool,
    /// Something the sidecar cannot run without (a check's thread) did not start: the main
    /// thread stops the sidecar with status 1.
    pub failed: bool,
}

impl State {
    pub fn health(&self) -> Health {
        if self.results.iter().any(|r| matches!(r, Some(Err(_)))) {
            Health::Unhealthy
        } else if self.results.iter().any(Option::is_none) {
            Health::Unknown
        } else {
            Health::Healthy
        }
    }
}

/// The shared state and the condition variable every change is announced on.
pub struct Board {
    state: Mutex<State>,
    changed: Condvar,
}

impl Board {
    pub fn new(checks: usize) -> Board {
        Board {
            state: Mutex::new(State {
                stopping: false,
                results: vec![None; checks],
                agent_done: false,
                failed: false,
            }),
            changed: Condvar::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a change, at most until `deadline` (`None`: until one comes).
    pub fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        match deadline {
            None => self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                self.changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        }
    }

    pub fn announce(&self) {
        self.changed.notify_all();
    }

    /// Stops every thread that watches the board.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.announce();
    }

    /// Stops every thread and tells the main thread that the sidecar cannot go on.
    pub fn fail(&self) {
        let mut state = self.lock();
        state.stopping = true;
        state.failed = true;
        drop(state);
        self.announce();
    }

    /// Records a check's run; a change of the overall health is logged once, here.
    fn record(&self, index: usize, check: &HealthCheck, result: Result<(), String>) {
        let mut state = self.lock();
        let before = state.health();
        let failure = result.as_ref().err().cloned();
        state.results[index] = Some(result);
        let after = state.health();
        if after != before {
            match (after, failure) {
                (Health::Unhealthy, Some(reason)) => {
                    warn!(format!("Health check failed: {check}: {reason}"))
                }
                (Health::Healthy, _) => info!("Health checks passing"),
                _ => {}
            }
        }
        drop(state);
        self.announce();
    }
}

/// A check whose thread could not be started, and why.
pub struct NotStarted {
    pub check: String,
    pub error: std::io::Error,
}

/// Starts one thread per check. Each runs its check at once, then every interval, until the
/// board stops. Without a thread a check would never run and the sidecar would never register
/// (or, were it a later one, never notice a failure): the caller stops the sidecar.
pub fn start_checks(
    board: &Arc<Board>,
    reaper: &Arc<Reaper>,
    checks: &[HealthCheck],
) -> Result<(), NotStarted> {
    for (index, check) in checks.iter().enumerate() {
        let board = board.clone();
        let reaper = reaper.clone();
        let check = check.clone();
        let name = check.to_string();
        std::thread::Builder::new()
            .name(format!("check-{index}"))
            .spawn(move || {
                let agent = match &check.probe {
                    Probe::Http { ca_certs, .. } => {
                        Some(client::check_agent(check.timeout, ca_certs))
                    }
                    _ => None,
                };
                loop {
                    // (A panic in a run aborts the process: the release profile does not
                    // unwind, so no check can die silently and leave its last result standing.)
                    let result = run(&check, agent.as_ref(), &reaper);
                    if board.lock().stopping {
                        return;
                    }
                    board.record(index, &check, result);
                    let next = Instant::now() + check.interval;
                    let mut state = board.lock();
                    while !state.stopping && Instant::now() < next {
                        state = board.wait(state, Some(next));
                    }
                    if state.stopping {
                        return;
                    }
                }
            })
            .map_err(|error| NotStarted { check: name, error })?;
    }
    Ok(())
}

/// One run of a check: `Err` is why it failed.
fn run(check: &HealthCheck, agent: Option<&ureq::Agent>, reaper: &Reaper) -> Result<(), String> {
    match &check.probe {
        Probe::Http {
            url, method, code, ..
        } => {
            let agent = agent.ok_or("no HTTP client")?;
            let status = client::check_request(agent, method, url)?;
            if status == *code {
                Ok(())
            } else {
                Err(format!("answered {status}, expected {code}"))
            }
        }
        Probe::Tcp { host, port } => {
            let deadline = Instant::now() + check.timeout;
            let addresses = resolve(host, *port, check.timeout)?;
            let mut last = String::from("no address");
            for address in addresses {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(format!("no connection within {:?}", check.timeout));
                }
                match TcpStream::connect_timeout(&address, left) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(last)
        }
        Probe::Command { path, args, code } => {
            let mut command = Command::new(path);
            command
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own group: a kill at the timeout reaches what it started, too.
                .process_group(0);
            let pid = reaper
                .spawn(&mut command)
                .map_err(|e| format!("cannot run {path}: {e}"))?;
            match reaper.wait_until(pid, Instant::now() + check.timeout) {
                Some(status) => {
                    let exit = super::process::exit_code(status);
                    if exit == *code {
                        Ok(())
                    } else {
                        Err(format!("exited with {exit}, expected {code}"))
                    }
                }
                None => {
                    super::process::send_signal(pid, libc::SIGKILL, true);
                    let _ = reaper.wait_until(pid, Instant::now() + KILL_REAP_WAIT);
                    Err(format!("still running after {:?}: killed", check.timeout))
                }
            }
        }
    }
}
