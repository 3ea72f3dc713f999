//! The registration agent (sidecar contract §3, §5): one plain thread that registers while the
//! application is healthy, heartbeats every period, registers again at once after a 410 (or
//! Eureka's 404), backs off while the registry is unreachable, and deregisters at stop.
//!
//! It sleeps on the health [`Board`] between requests, so a change of health or a stop wakes it
//! at once; a request in flight is bounded by the client's timeout.

use super::client::RegistryClient;
use super::health::{Board, Health};
use super::protocol::{pick_host_address, Codec, Identity, Registered, Renewal};
use super::resolve::resolve;
use super::settings::{Protocol, SidecarConfig};
use crate::{debug, info, warn};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The wait after the first failure; each further one doubles it up to [`BACKOFF_CAP`] (D36).
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between registration attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// The longest wait for the endpoint host's address (Eureka's `ipAddr`) at a registration.
const HOST_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Each delay is multiplied by a random factor in [1 - this, 1 + this], so that many sidecars
/// do not come back in step.
const BACKOFF_JITTER: f64 = 0.2;

/// The delay before the next attempt after `failures` consecutive failures (1 for the first),
/// before jitter: 1, 2, 4, then 5 s.
pub fn backoff(failures: u32) -> Duration {
    let doubled = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(BACKOFF_CAP)
}

/// A small random generator for the jitter (xorshift64*), seeded by the kernel.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let mut seed = [0u8; 8];
        // SAFETY: getrandom writes at most `seed.len()` bytes into the buffer we own.
        let filled = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        let seed = if filled == seed.len() as isize {
            u64::from_ne_bytes(seed)
        } else {
            u64::from(std::process::id()) << 32 | 0x9e37_79b9
        };
        Jitter(seed | 1)
    }

    /// A factor uniformly in [1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER].
    fn factor(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let unit = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        1.0 - BACKOFF_JITTER + 2.0 * BACKOFF_JITTER * unit
    }

    fn delay(&mut self, failures: u32) -> Duration {
        backoff(failures).mul_f64(self.factor())
    }
}

/// Where the agent is.
enum Phase {
    /// Register at `at`; `failures` in a row so far.
    Registering { at: Instant, failures: u32 },
    /// Registered; the next heartbeat at `at`.
    Renewing { at: Instant, registered: Registered },
}

pub struct Agent {
    codec: Codec,
    client: RegistryClient,
    board: Arc<Board>,
    service_name: String,
    endpoint_host: Option<String>,
    jitter: Jitter,
}

impl Agent {
    pub fn new(config: &SidecarConfig, board: Arc<Board>) -> Agent {
        Agent {
            codec: Codec::new(config),
            client: RegistryClient::new(config.registry_token.clone()),
            board,
            service_name: config.service_name.clone(),
            endpoint_host: config.endpoint_host.clone(),
            jitter: Jitter::new(),
        }
    }

    fn registry_name(&self) -> &'static str {
        match self.codec.protocol() {
            Protocol::Amalgam8 => "Amalgam8",
            Protocol::Eureka => "Eureka",
        }
    }

    /// This instance's host for this attempt: the configured one, else the host's address.
    fn identity(&self) -> Result<Identity, String> {
        let host = match &self.endpoint_host {
            Some(host) => host.clone(),
            None => pick_host_address(&host_addresses())
                .ok_or("the host has no non-loopback address to register")?
                .to_string(),
        };
        // Only Eureka's `ipAddr` needs the address; a name that does not resolve in time is
        // sent as it is, as one that does not resolve at all (§5).
        let ip_addr = match (host.parse::<IpAddr>(), self.codec.protocol()) {
            (Ok(ip), _) => ip.to_string(),
            (Err(_), Protocol::Amalgam8) => host.clone(),
            (Err(_), Protocol::Eureka) => resolve(&host, 0, HOST_LOOKUP_TIMEOUT)
                .ok()
                .and_then(|addresses| addresses.first().copied())
                .map_or_else(|| host.clone(), |a| a.ip().to_string()),
        };
        Ok(Identity { host, ip_addr })
    }

    fn register(&mut self) -> Result<Registered, (String, String)> {
        let identity = self.identity().map_err(|e| (e, String::new()))?;
        let expected = self.codec.expected_id(&identity);
        let request = self.codec.register(&identity);
        let (status, body) = self
            .client
            .send(&request)
            .map_err(|e| (e, expected.clone()))?;
        self.codec
            .registered(&identity, status, &body)
            .map_err(|e| (e, expected))
    }

    /// Runs until the board stops, then deregisters if registered. `start` is when the agent
    /// begins (1 s after the sidecar started).
    pub fn run(mut self, start: Instant) {
        let board = self.board.clone();
        let mut state = board.lock();
        while !state.stopping && Instant::now() < start {
            state = board.wait(state, Some(start));
        }
        let mut phase = Phase::Registering {
            at: Instant::now(),
            failures: 0,
        };
        let mut was_healthy = true;
        loop {
            if state.stopping {
                break;
            }
            if state.health() != Health::Healthy {
                if was_healthy {
                    if let Phase::Renewing { registered, .. } = &phase {
                        info!(
                            "Heartbeats stopped while the application is unhealthy; the registry drops the instance when its TTL runs out",
                            "service_name" => self.service_name,
                            "instance_id" => registered.id
                        );
                    }
                    was_healthy = false;
                }
                // Healthy again: register at once.
                phase = Phase::Registering {
                    at: Instant::now(),
                    failures: 0,
                };
                state = board.wait(state, None);
                continue;
            }
            was_healthy = true;
            let now = Instant::now();
            let due = match &phase {
                Phase::Registering { at, .. } | Phase::Renewing { at, .. } => *at,
            };
            if now < due {
                state = board.wait(state, Some(due));
                continue;
            }
            drop(state);
            phase = match phase {
                Phase::Registering { failures, .. } => self.attempt(failures),
                Phase::Renewing { registered, .. } => self.renew(registered),
            };
            state = board.lock();
        }
        drop(state);
        if let Phase::Renewing { registered, .. } = phase {
            self.deregister(&registered);
        }
        board.lock().agent_done = true;
        board.announce();
    }

    fn attempt(&mut self, failures: u32) -> Phase {
        match self.register() {
            Ok(registered) => {
                info!(
                    format!("Service successfully registered with {}", self.registry_name()),
                    "service_name" => self.service_name,
                    "instance_id" => registered.id,
                    "ttl" => registered.ttl_secs
                );
                Phase::Renewing {
                    at: Instant::now() + registered.period,
                    registered,
                }
            }
            Err((reason, instance_id)) => {
                let failures = failures.saturating_add(1);
                let delay = self.jitter.delay(failures);
                if failures == 1 || backoff(failures) == BACKOFF_CAP {
                    warn!(
                        "Service registration had failed",
                        "service_name" => self.service_name,
                        "instance_id" => instance_id,
                        "reason" => reason,
                        "retry_in" => format!("{:.1}s", delay.as_secs_f64())
                    );
                } else {
                    debug!(
                        "Service registration had failed",
                        "service_name" => self.service_name,
                        "instance_id" => instance_id,
                        "reason" => reason,
                        "retry_in" => format!("{:.1}s", delay.as_secs_f64())
                    );
                }
                Phase::Registering {
                    at: Instant::now() + delay,
                    failures,
                }
            }
        }
    }

    fn renew(&mut self, registered: Registered) -> Phase {
        debug!(
            format!(
                "Attempting to renew service registration with {}",
                self.registry_name()
            ),
            "service_name" => self.service_name,
            "instance_id" => registered.id
        );
        let request = self.codec.heartbeat(&registered.id);
        let outcome = match self.client.send(&request) {
            Ok((status, _)) => self.codec.renewal(status),
            Err(reason) => Renewal::Failed(reason),
        };
        match outcome {
            Renewal::Renewed => Phase::Renewing {
                at: Instant::now() + registered.period,
                registered,
            },
            Renewal::Unknown(status) => {
                warn!(
                    "Service registration renewal had failed",
                    "service_name" => self.service_name,
                    "instance_id" => registered.id,
                    "reason" => status
                );
                Phase::Registering {
                    at: Instant::now(),
                    failures: 0,
                }
            }
            Renewal::Failed(reason) => {
                warn!(
                    "Service registration renewal had failed",
                    "service_name" => self.service_name,
                    "instance_id" => registered.id,
                    "reason" => reason
                );
                // D36: the registry counts as unreachable: back to registering after the
                // first backoff delay.
                Phase::Registering {
                    at: Instant::now() + self.jitter.delay(1),
                    failures: 1,
                }
            }
        }
    }

    fn deregister(&self, registered: &Registered) {
        let request = self.codec.deregister(&registered.id);
        match self.client.send(&request) {
            Ok((status, _)) if self.codec.deregistered(status) => info!(
                format!("Service successfully deregistered with {}", self.registry_name()),
                "service_name" => self.service_name,
                "instance_id" => registered.id
            ),
            Ok((status, _)) => warn!(
                "Service deregistration had failed",
                "service_name" => self.service_name,
                "instance_id" => registered.id,
                "reason" => format!("registry answered {status}")
            ),
            Err(reason) => warn!(
                "Service deregistration had failed",
                "service_name" => self.service_name,
                "instance_id" => registered.id,
                "reason" => reason
            ),
        }
    }
}

/// The host's interface addresses, in interface order.
fn host_addresses() -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) fills `list` with a linked list we read, then free once with
    // freeifaddrs(3). Each `ifa_addr` is null or points to a sockaddr of its `sa_family`.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return addresses;
        }
        let mut entry = list;
        while !entry.is_null() {
            let address = (*entry).ifa_addr;
            if !address.is_null() {
                match i32::from((*address).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(address as *const libc::sockaddr_in);
                        addresses
                            .push(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(address as *const libc::sockaddr_in6);
                        addresses.push(IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            entry = (*entry).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_five() {
        let secs: Vec<u64> = (1..=6).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 5, 5, 5]);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let mut jitter = Jitter::new();
        for _ in 0..10_000 {
            let d = jitter.delay(4).as_secs_f64();
            assert!((4.0..=6.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn the_host_has_addresses() {
        // Every machine that runs the tests has at least its loopback interface.
        assert!(host_addresses().iter().any(|a| a.is_loopback()));
    }
}
