//! The `a8registry` binary: parses the command and runs the server, `token` or `sidecar`. The
//! components live in the library crate (`lib.rs`).

use a8registry::cluster::{self, Cluster};
use a8registry::config::{Command, Config};
use a8registry::http::server::{refuse_connection, Limits, Server};
use a8registry::net::{provide_descriptors, spawn_acceptor, AcceptOptions, Connections};
use a8registry::registry::clock::PauseCompensatingClock;
use a8registry::registry::instance::TtlPolicy;
use a8registry::registry::memory::{MemoryConfig, MemoryStore};
use a8registry::registry::store::Store;
use a8registry::store::redis::{RedisConfig, RedisStore};
use a8registry::{api, auth, config, debug, error, info, log, warn};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest wait after a stop signal for the connections to answer what they have received.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Coroutine stack size in machine words (128 KiB on 64-bit): room for the JSON decoder at the
/// nesting limit of 64 with a margin (DESIGN decision 3).
const COROUTINE_STACK_WORDS: usize = 16 * 1024;

/// How often aged Eureka change-log entries, tombstones and the bookkeeping of emptied namespaces
/// are dropped (Netflix prunes its change log every 30 s too).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);

/// Coroutines kept for reuse. may fills its pool at startup: its default of 1,000 stacks cost
/// about 6 MiB of idle RSS and 10 ms of startup; more are made on demand.
const COROUTINE_POOL_CAPACITY: usize = 64;

/// How long an idle may worker sleeps in epoll before it looks for work to steal from a busy
/// one (may's default is 10 ms: 200 wake-ups a second for two idle workers). Work arriving from
/// another thread wakes a worker at once; only stealing waits for this.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Printed on stderr when `a8registry token` mints a token without `--ttl`.
const NEVER_EXPIRES_WARNING: &str = "a8registry token: warning: without --ttl the token never \
expires; it stays valid until the registry's --jwt_secret changes";

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
/// The pipe the stop signal's handler writes a byte to, so the main thread sleeps in `read`
/// until then instead of waking every few milliseconds to look (an idle registry uses no CPU).
static STOP_PIPE: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
    let fd = STOP_PIPE[1].load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the byte is on this handler's stack. A full
        // pipe already holds a wake-up, so a failed write loses nothing.
        unsafe {
            libc::write(fd, [1u8].as_ptr().cast(), 1);
        }
    }
}

/// Blocks until SIGTERM or SIGINT has arrived.
fn wait_for_stop_signal() {
    let fd = STOP_PIPE[0].load(Ordering::SeqCst);
    while !STOP_REQUESTED.load(Ordering::SeqCst) {
        if fd < 0 {
            // No pipe could be made: look now and then.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let mut byte = 0u8;
        // SAFETY: read(2) of one byte into a local; EINTR and errors just loop to the check.
        unsafe {
            libc::read(fd, (&mut byte as *mut u8).cast(), 1);
        }
    }
}

/// A fresh random member id for this process (cluster contract §2.1), from the kernel's
/// generator; the clock and the pid stand in if it cannot be read.
fn member_id() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer we own.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled == bytes.len() as isize {
        return u64::from_ne_bytes(bytes);
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

fn install_signal_handlers() {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: pipe2(2) fills the two descriptors of the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0 {
        STOP_PIPE[0].store(fds[0], Ordering::SeqCst);
        STOP_PIPE[1].store(fds[1], Ordering::SeqCst);
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the sigaction
        // struct is zero-initialised and then filled with valid values.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let command = match config::parse(args, &|name| std::env::var(name).ok()) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("a8registry {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Token {
            secret,
            namespace,
            ttl,
        } => {
            let mut claims = serde_json::Map::new();
            claims.insert("namespace".into(), namespace.as_str().into());
            match ttl {
                Some(ttl) => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    claims.insert("exp".into(), now.saturating_add(ttl.as_secs()).into());
                }
                // Allowed, but a leaked token without an expiry works until the secret changes:
                // say so where the operator sees it, outside the token on stdout.
                None => eprintln!("{NEVER_EXPIRES_WARNING}"),
            }
            println!("{}", auth::jwt::sign(&claims, secret.expose().as_bytes()));
            ExitCode::SUCCESS
        }
        Command::Sidecar(config) => ExitCode::from(a8registry::sidecar::run(*config)),
        Command::Serve { config, summary } => {
            let code = serve(*config, &summary);
            // The log thread writes asynchronously: give it the last lines before exiting.
            log::flush();
            code
        }
    }
}

/// Runs the server until a stop signal; `summary` is the effective configuration for the startup
/// line, its secrets masked.
fn serve(config: Config, summary: &str) -> ExitCode {
    if let Err(e) = log::init(config.log_level, config.log_format) {
        eprintln!("a8registry: cannot start the log thread: {e}");
        return ExitCode::from(1);
    }
    for warning in &config.warnings {
        a8registry::warn!("configuration", "warning" => warning);
    }
    let exec_started = Instant::now();
    may::config()
        .set_workers(config.workers)
        .set_stack_size(COROUTINE_STACK_WORDS)
        .set_pool_capacity(COROUTINE_POOL_CAPACITY);
    may::config().set_worker_pin(false);
    may::config().set_timeout_ns(IDLE_POLL.as_nanos() as u64);

    let node_id = member_id();
    let ttl = TtlPolicy {
        default: config.default_ttl,
        min: config.min_ttl,
        max: config.max_ttl,
    };
    let mut memory: Option<Arc<MemoryStore>> = None;
    let mut redis: Option<Arc<RedisStore>> = None;
    let store: Arc<dyn Store> = match &config.redis {
        Some(settings) => {
            let started = RedisStore::start(
                settings.clone(),
                RedisConfig {
                    ttl,
                    capacity: config.namespace_capacity,
                    node_id,
                },
            );
            match started {
                Ok(store) => {
                    redis = Some(store.clone());
                    store
                }
                Err(e) => {
                    error!("cannot start the Redis store", "error" => e);
                    return ExitCode::from(1);
                }
            }
        }
        None => {
            // D39: a pause of the registry itself moves every lease deadline by its length.
            // (Redis judges its deadlines on its own clock.)
            let clock = match PauseCompensatingClock::start() {
                Ok(clock) => clock,
                Err(e) => {
                    error!("cannot start the clock thread", "error" => e);
                    return ExitCode::from(1);
                }
            };
            let store = Arc::new(MemoryStore::new(
                MemoryConfig {
                    ttl,
                    capacity: config.namespace_capacity,
                    node_id,
                    // Replication keeps tombstones for max_ttl, so no late message revives a
                    // record (cluster contract §6 rule 2).
                    tombstone_retention: config.replication.then_some(config.max_ttl),
                },
                clock,
            ));
            if let Err(e) = MemoryStore::start_reaper(&store) {
                error!("cannot start the expiry thread", "error" => e);
                return ExitCode::from(1);
            }
            memory = Some(store.clone());
            store
        }
    };
    store.subscribe(Box::new(|change| {
        debug!(
            "change",
            "namespace" => change.namespace,
            "service" => change.instance.service_name,
            "id" => change.instance.id,
            "kind" => format!("{:?}", change.kind),
            "version" => change.instance.version
        );
    }));
    let authenticator =
        auth::Authenticator::new(config.auth_modes.clone(), config.jwt_secret.expose());
    let api = match api::Api::new(store.clone(), authenticator, config.require_https) {
        Ok(api) => api,
        Err(e) => {
            error!("cannot start the watch thread", "error" => e);
            return ExitCode::from(1);
        }
    };

    if let Some(settings) = &config.kubernetes {
        let catalogs = api.catalogs();
        match a8registry::catalogs::kubernetes::start(settings, catalogs.clone()) {
            Ok(source) => catalogs.on_use(Box::new(move |namespace| source.used(namespace))),
            Err(e) => {
                error!("cannot start the Kubernetes catalog", "error" => e);
                return ExitCode::from(1);
            }
        }
    }

    if !config.fs_catalog.is_empty() {
        let directory = std::path::Path::new(&config.fs_catalog);
        if let Err(e) = a8registry::catalogs::files::start(directory, api.catalogs()) {
            error!("cannot start the file catalog", "error" => e);
            return ExitCode::from(1);
        }
    }

    if !config.eureka_urls.is_empty() {
        let started = a8registry::catalogs::eureka::start(
            config.eureka_urls.clone(),
            config.catalog_poll,
            api.catalogs(),
        );
        if let Err(e) = started {
            error!("cannot start the Eureka catalog", "error" => e);
            return ExitCode::from(1);
        }
    }

    let housekeeping = Arc::downgrade(&api);
    let pruned = memory.as_ref().map(Arc::downgrade);
    let started = std::thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || loop {
            std::thread::sleep(HOUSEKEEPING_INTERVAL);
            let Some(api) = housekeeping.upgrade() else {
                return;
            };
            if let Some(store) = pruned.as_ref().and_then(|p| p.upgrade()) {
                store.prune();
            }
            api.housekeeping();
        });
    if let Err(e) = started {
        error!("cannot start the housekeeping thread", "error" => e);
        return ExitCode::from(1);
    }

    let connections = match Connections::start() {
        Ok(connections) => connections,
        Err(e) => {
            error!("cannot start the connection deadline thread", "error" => e);
            return ExitCode::from(1);
        }
    };
    let cluster = if let (true, Some(memory)) = (config.replication, &memory) {
        match start_cluster(&config, node_id, memory.clone(), &connections) {
            Ok(cluster) => Some(cluster),
            Err(line) => {
                error!(&line);
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    if let Some((cluster, _)) = &cluster {
        let health = cluster.clone();
        api.set_health(Box::new(move || health.health()));
        let sync = cluster.clone();
        api.set_sync_check(Box::new(move || sync.initial_sync_ended()));
        let peers = cluster.clone();
        api.set_peer_metrics(Box::new(move || peers.peer_metrics()));
    }
    if let Some(redis) = &redis {
        let health = Arc::downgrade(redis);
        api.set_health(Box::new(move || {
            health
                .upgrade()
                .map(|store| vec![store_component(&store)])
                .unwrap_or_default()
        }));
        if !redis.probe(Duration::from_millis(500)) {
            warn!(
                "Redis is not usable yet; the API answers 503 until it is",
                "address" => redis.settings().shown()
            );
        }
    }

    let listener = match listen(SocketAddr::new(config.api_bind, config.api_port)) {
        Ok(listener) => listener,
        Err(e) => {
            error!(
                "cannot listen",
                "address" => format!("{}:{}", config.api_bind, config.api_port),
                "error" => e
            );
            return ExitCode::from(1);
        }
    };
    let address = match listener.local_addr() {
        Ok(address) => address,
        Err(e) => {
            error!("cannot read the listen address", "error" => e);
            return ExitCode::from(1);
        }
    };
    install_signal_handlers();
    let counted = connections.clone();
    api.count_connections(Box::new(move || counted.open()));
    api.limit_watchers(config.max_connections);
    let limits = Limits {
        max_body_bytes: config.max_body_size,
        max_body_memory: config.max_body_memory,
        idle_timeout: config.idle_timeout,
        request_timeout: config.request_timeout,
    };
    let server = Arc::new(Server::new(api, limits));
    let serving = server.clone();
    let options = AcceptOptions {
        name: "api",
        max_connections: config.max_connections,
    };
    let acceptor = match spawn_acceptor(
        listener,
        options,
        &connections,
        refuse_connection,
        move |link| serving.serve(link),
    ) {
        Ok(acceptor) => acceptor,
        Err(e) => {
            error!("cannot start accepting", "error" => e);
            return ExitCode::from(1);
        }
    };
    info!(
        "listening",
        "address" => address,
        "startup_micros" => exec_started.elapsed().as_micros(),
        "config" => summary,
        "ui" => api::ui::page_url(address)
    );
    provide_descriptors(options);

    wait_for_stop_signal();
    if let Some((cluster, _)) = &cluster {
        info!("leaving the cluster");
        cluster.leave();
    }
    info!("stopping: no new connections, answering the requests received");
    // The acceptor takes the connections already queued and closes the listener; every
    // connection answers what it has received and closes, idle ones at once.
    connections.stop();
    let _ = acceptor.join();
    if let Some((_, replication)) = cluster {
        let _ = replication.join();
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while connections.open() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    info!(
        "stopped",
        "unfinished_requests" => server.in_flight(),
        "open_connections" => connections.open()
    );
    ExitCode::SUCCESS
}

/// The `/uptime` component of the Redis store (Redis contract §4.2).
fn store_component(store: &RedisStore) -> (&'static str, bool, serde_json::Value) {
    let health = store.health();
    let healthy = health.healthy();
    let settings = store.settings();
    let mut properties = serde_json::Map::new();
    properties.insert("type".into(), "redis".into());
    properties.insert("mode".into(), settings.mode.name().into());
    properties.insert("address".into(), settings.shown().into());
    if let Some(master) = health.master() {
        properties.insert("master".into(), master.into());
    }
    if !healthy {
        properties.insert("message".into(), health.message().into());
    }
    ("STORE", healthy, serde_json::Value::Object(properties))
}

/// Clustered mode, steps 2 to 5 of the cluster contract §4: binds the replication listener,
/// joins (member file, peers), answers incoming links and waits for the initial sync. The error
/// is the one line to log before exiting 1.
fn start_cluster(
    config: &Config,
    node_id: u64,
    store: Arc<MemoryStore>,
    connections: &Connections,
) -> Result<(Arc<Cluster>, may::coroutine::JoinHandle<()>), String> {
    let settings = config.cluster.clone();
    let address = SocketAddr::new(settings.bind, settings.port);
    let listener = cluster::bind(&settings).map_err(|e| {
        format!(
            "cannot listen for replication on {}: {e}",
            cluster::address::socket_text(address)
        )
    })?;
    let bound = listener.local_addr().unwrap_or(address);
    let cluster = Cluster::start(settings, node_id, store, bound)?;
    let serving = cluster.clone();
    let options = AcceptOptions {
        name: "replication",
        max_connections: Cluster::max_connections(),
    };
    // Over the limit a replication connection is just closed: the dialer backs off.
    let acceptor = spawn_acceptor(
        listener,
        options,
        connections,
        |_| {},
        move |link| serving.accept(link),
    )
    .map_err(|e| format!("cannot accept replication connections: {e}"))?;
    cluster.wait_initial_sync();
    Ok((cluster, acceptor))
}

/// Connections the kernel queues for the acceptor (std listens with 128).
const LISTEN_BACKLOG: libc::c_int = 1024;

/// Binds the API port. Not with `may::net::TcpListener::bind`: it sets SO_REUSEPORT, so a second
/// registry started on a port in use would silently share it instead of failing. std binds
/// without it; the backlog is then raised with a second listen(2), which Linux allows.
fn listen(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use std::os::unix::io::AsRawFd;
    let listener = std::net::TcpListener::bind(address)?;
    // SAFETY: listen(2) on the listening socket just created, which `listener` owns.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(listener)
}
