//! Child processes and signals (sidecar contract §6, §7): one reaper for every child, the
//! signal mask, and waiting for SIGTERM, SIGINT and SIGCHLD.
//!
//! The main thread is the only one that reaps (`waitpid(-1)`): as process 1 in a container it
//! must also collect orphans it never started, and a second waiter (a health check waiting for
//! its command) would race it for the exit status. So every child is spawned through
//! [`Reaper::spawn`], which records its pid under the lock the reaper holds while it reaps; a
//! child's status is then kept until its owner takes it. Orphans' statuses are dropped.

use std::collections::HashMap;
use std::io;
use std::process::Command;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The signals the sidecar handles; blocked in every thread and taken by [`wait_signal`].
const HANDLED_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD];

/// The exit status of a process as the sidecar reports it: its code, or 128 + S when signal S
/// killed it (S11).
pub fn exit_code(wait_status: libc::c_int) -> i32 {
    if libc::WIFEXITED(wait_status) {
        libc::WEXITSTATUS(wait_status)
    } else if libc::WIFSIGNALED(wait_status) {
        128 + libc::WTERMSIG(wait_status)
    } else {
        1
    }
}

/// Exit statuses of the children spawned through it.
#[derive(Default)]
pub struct Reaper {
    /// pid → its wait status once reaped.
    children: Mutex<HashMap<libc::pid_t, Option<libc::c_int>>>,
    reaped: Condvar,
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, HashMap<libc::pid_t, Option<libc::c_int>>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `command` and records its pid before the reaper can see it exit. The `Child` is
    /// dropped unwaited: its status belongs to the reaper.
    pub fn spawn(&self, command: &mut Command) -> io::Result<libc::pid_t> {
        use std::os::unix::process::CommandExt;
        let unblocked = empty_set();
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // pthread_sigmask(3) on a set it owns, which is async-signal-safe. The child must not
        // inherit the signals this process blocks: it would never see SIGTERM.
        unsafe {
            command.pre_exec(move || {
                libc::pthread_sigmask(libc::SIG_SETMASK, &unblocked, std::ptr::null_mut());
                Ok(())
            });
        }
        let mut children = self.lock();
        let child = command.spawn()?;
        let pid = child.id() as libc::pid_t;
        children.insert(pid, None);
        Ok(pid)
    }

    /// Collects every child that has exited (orphans included) without waiting.
    pub fn reap(&self) {
        let mut children = self.lock();
        let mut any = false;
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid(2) with a valid pointer to a status we own.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if let Some(slot) = children.get_mut(&pid) {
                *slot = Some(status);
                any = true;
            }
        }
        drop(children);
        if any {
            self.reaped.notify_all();
        }
    }

    /// The wait status of `pid` if it has been reaped; the record is then forgotten.
    pub fn take(&self, pid: libc::pid_t) -> Option<libc::c_int> {
        let mut children = self.lock();
        let status = children.get(&pid).copied().flatten();
        if status.is_some() {
            children.remove(&pid);
        }
        status
    }

    /// Waits until `pid` has been reaped (by the main thread) or `deadline` passed.
    pub fn wait_until(&self, pid: libc::pid_t, deadline: Instant) -> Option<libc::c_int> {
        let mut children = self.lock();
        loop {
            if let Some(Some(status)) = children.get(&pid).copied() {
                children.remove(&pid);
                return Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            children = self
                .reaped
                .wait_timeout(children, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Sends `signal` to a process, or to its process group.
pub fn send_signal(pid: libc::pid_t, signal: libc::c_int, group: bool) {
    let target = if group { -pid } else { pid };
    // SAFETY: kill(2) has no memory effects; a process that is gone gives ESRCH, ignored.
    unsafe {
        libc::kill(target, signal);
    }
}

fn empty_set() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    }
}

fn handled_set() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in HANDLED_SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

extern "C" fn ignore_signal(_signal: libc::c_int) {}

/// Blocks the handled signals in this thread and every thread started after it, so they wait
/// for [`wait_signal`]. Must run before any thread starts. Children spawned through the
/// [`Reaper`] start with an empty mask.
pub fn take_over_signals() {
    let set = handled_set();
    // SAFETY: plain signal-mask and disposition calls on structures we own. The handlers are
    // never run while the signals are blocked; they exist so that a process 1, for which the
    // kernel drops signals left at their default action, still receives SIGTERM and SIGINT.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        for signal in [libc::SIGTERM, libc::SIGINT] {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        // An inherited SIGCHLD set to "ignore" would make the kernel discard exit statuses.
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut());
    }
}

/// Waits at most `timeout` for a handled signal; `None` on timeout.
pub fn wait_signal(timeout: Duration) -> Option<libc::c_int> {
    let set = handled_set();
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as _,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: sigtimedwait(2) with a set, an info buffer and a timeout we own.
    let signal = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::sigtimedwait(&set, &mut info, &timeout)
    };
    (signal > 0).then_some(signal)
}

/// A signal's name for the log.
pub fn signal_name(signal: libc::c_int) -> String {
    match signal {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGCHLD => "SIGCHLD".into(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        // Encoded as the kernel does: code << 8 for an exit, the signal number for a kill.
        assert_eq!(exit_code(7 << 8), 7);
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(libc::SIGKILL), 128 + 9);
        assert_eq!(exit_code(libc::SIGTERM), 128 + 15);
    }
}
