//! The connection layer: Redis I/O on plain threads, never on a `may` worker.
//!
//! The connections ([`super::resp`]) do blocking socket I/O, so a fixed set of plain worker
//! threads own them. Callers (coroutines serving requests, or plain threads) put a [`Job`] on one
//! bounded queue and park (a `may` blocker) until its answer comes or their deadline passes,
//! whichever is first; a coroutine that parks lets its worker serve other connections. A full
//! queue is refused at once. Each worker takes every job waiting (up to [`MAX_BATCH`]) and sends
//! their commands in one write, then reads the answers: concurrent requests share round trips.
//!
//! Every socket has a connect timeout and read and write timeouts, so a Redis that refuses,
//! resets or stops answering (SIGSTOP) fails the batch within [`IO_TIMEOUT`]; the caller's own
//! deadline bounds its wait anyway. A worker whose connection failed reconnects on its next
//! batch, after a backoff that doubles up to [`MAX_BACKOFF`]; until then it fails jobs at once.
//!
//! Standalone, Sentinel and Cluster share all of this; they differ only in how a connection is
//! made ([`Connector`]): to the one address; to the master the Sentinels name (asked again when
//! the master fails, answers `READONLY`, or a poll sees a switch); or one per cluster master,
//! routed by the slot map ([`super::cluster`]), which follows `MOVED` and `ASK`.

use super::cluster::ClusterConn;
use super::keys::{MIGRATION_GUARD, RECORDS};
use super::overdue::{Deadlines, Wait};
pub use super::resp::Reply;
use super::resp::{encode, is_timeout, Connection, Value};
use super::settings::{Address, Mode, RedisSettings};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest wait for a TCP connection (and its `AUTH`/`SELECT`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait for a write or for an answer on an open connection.
pub const IO_TIMEOUT: Duration = Duration::from_millis(1000);
/// First and longest wait before a worker tries to reconnect (spec §4.3: at most 1 s).
const MIN_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Most jobs one worker sends in one write.
const MAX_BATCH: usize = 128;
/// Jobs that may wait for a worker; more are refused at once.
const QUEUE_CAPACITY: usize = 4096;
/// How often the Sentinels are asked who the master is.
pub const SENTINEL_POLL: Duration = Duration::from_secs(1);

/// One command of a job.
#[derive(Clone)]
pub enum Command {
    /// The store's script on the namespace whose key prefix is `namespace`, sent by its hash
    /// (and by its text when Redis does not know it yet). Its keys are the namespace's records
    /// hash and its migration guard ([`super::keys`]).
    Script {
        namespace: String,
        args: Vec<Vec<u8>>,
    },
    /// Any other command: its name and arguments.
    Plain(Vec<Vec<u8>>),
}

impl Command {
    /// A command from its name and arguments.
    pub fn plain(args: &[&[u8]]) -> Command {
        Command::Plain(args.iter().map(|a| a.to_vec()).collect())
    }
}

/// A command as it goes out.
pub type Packed = Vec<Vec<u8>>;

/// Why a job got no answers.
pub type Failure = String;

struct Job {
    commands: Vec<Command>,
    deadline: Instant,
    answer: Arc<Answer>,
}

/// Where a worker leaves a job's answer for the caller parked on it. One small allocation per
/// call: a `may` channel allocates its queue's first block (a kilobyte, aligned) for the one
/// message it would carry.
struct Answer {
    value: Mutex<Option<Result<Vec<Reply>, Failure>>>,
    /// When the caller stops waiting.
    deadline: Instant,
    /// The caller took its answer or stopped waiting.
    over: AtomicBool,
    /// Parks a coroutine without blocking its worker, or a plain thread (reapers, catalogs).
    caller: may::sync::Blocker,
    /// The caller is a coroutine: its wake-up may come from a coroutine on a worker.
    on_coroutine: bool,
}

impl Answer {
    fn new(deadline: Instant) -> Answer {
        Answer {
            value: Mutex::new(None),
            deadline,
            over: AtomicBool::new(false),
            caller: may::sync::Blocker::new(false),
            on_coroutine: may::coroutine::is_coroutine(),
        }
    }

    /// Leaves the answer and wakes the caller; one that stopped waiting finds it never.
    fn send(&self, value: Result<Vec<Reply>, Failure>) {
        *lock(&self.value) = Some(value);
        self.caller.unpark();
    }

    /// The answer, once it is there, or `None` when the deadline passes first. A coroutine's
    /// park has no timeout: [`Deadlines`] ends it (see [`super::overdue`]); a plain thread's
    /// park times out by itself.
    fn wait(&self) -> Option<Result<Vec<Reply>, Failure>> {
        loop {
            if let Some(value) = self.take() {
                return Some(value);
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            let timeout = (!self.on_coroutine).then_some(left);
            // A park ends when the worker unparks it (an unpark before the park is kept), at
            // the timeout, or when the coroutine is cancelled; only the answer's presence counts.
            if left.is_zero() || self.caller.park(timeout).is_err() {
                let last = self.take();
                self.over.store(true, Ordering::SeqCst);
                return last;
            }
        }
    }

    /// The answer if it is there, the wait then over: under the value's lock, so that
    /// [`Wait::expire`] never finds an answer taken and the wait not yet over.
    fn take(&self) -> Option<Result<Vec<Reply>, Failure>> {
        let mut value = lock(&self.value);
        let taken = value.take();
        if taken.is_some() {
            self.over.store(true, Ordering::SeqCst);
        }
        taken
    }
}

impl Wait for Answer {
    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn is_over(&self) -> bool {
        self.over.load(Ordering::SeqCst)
    }

    fn expire(&self) -> bool {
        let mut value = lock(&self.value);
        if value.is_some() || self.is_over() {
            return false;
        }
        *value = Some(Err(NO_ANSWER_IN_TIME.into()));
        drop(value);
        self.caller.unpark();
        true
    }
}

/// Why a call failed whose deadline passed before Redis answered.
const NO_ANSWER_IN_TIME: &str = "Redis did not answer in time";

/// Whether Redis works, as the last operation or probe found (spec §4.2).
#[derive(Default)]
pub struct Health {
    healthy: AtomicBool,
    message: Mutex<String>,
    /// Sentinel mode: the master in use, as `host:port`.
    master: Mutex<Option<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Health {
    pub fn ok(&self) {
        self.healthy.store(true, Ordering::SeqCst);
    }

    pub fn fail(&self, message: &str) {
        *lock(&self.message) = message.to_string();
        self.healthy.store(false, Ordering::SeqCst);
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    pub fn message(&self) -> String {
        lock(&self.message).clone()
    }

    pub fn master(&self) -> Option<String> {
        lock(&self.master).clone()
    }
}

/// An open connection of either kind.
pub enum Conn {
    Single(Connection),
    Cluster(Box<ClusterConn>),
}

/// A failure of the connection itself (not an error reply): the connection is dropped.
pub struct Broken(pub String);

/// What a timed-out read or write is reported as.
pub const TIMED_OUT: &str = "Redis did not answer in time";

/// A socket error as `/uptime` and the log show it.
pub fn describe_error(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    if is_timeout(error) {
        return TIMED_OUT.into();
    }
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            "connection closed".into()
        }
        _ => error.to_string(),
    }
}

/// Writes the commands in one write and reads their replies.
pub fn exchange(connection: &mut Connection, commands: &[&Packed]) -> Result<Vec<Reply>, Broken> {
    let mut packed = Vec::with_capacity(commands.len() * 128);
    for command in commands {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        encode(&args, &mut packed);
    }
    let broken = |e: std::io::Error| Broken(describe_error(&e));
    connection.send(&packed).map_err(broken)?;
    commands
        .iter()
        .map(|_| connection.receive().map_err(broken))
        .collect()
}

impl Conn {
    /// Sends the commands and reads their answers: in one write on a single connection; one by
    /// one in Cluster mode, each to the master of its key's slot.
    fn run(&mut self, commands: &[(Option<Vec<u8>>, Packed)]) -> Result<Vec<Reply>, Broken> {
        match self {
            Conn::Single(connection) => {
                let all: Vec<&Packed> = commands.iter().map(|(_, c)| c).collect();
                exchange(connection, &all)
            }
            Conn::Cluster(connection) => connection.run(commands),
        }
    }
}

/// Makes connections for the configured mode.
pub struct Connector {
    settings: RedisSettings,
    source: &'static str,
    /// The script's SHA-1, as Redis told it (`SCRIPT LOAD`) on the first connection.
    sha: std::sync::OnceLock<Vec<u8>>,
    /// Moves whenever the Sentinels name another master: workers then reconnect.
    epoch: AtomicU64,
    /// Sentinel mode: the master last named.
    master: Mutex<Option<(String, u16)>>,
    /// Connections any worker made: a worker waiting out its backoff tries again at once when
    /// another one got through (Redis is back).
    connections_made: AtomicU64,
    health: Arc<Health>,
}

/// A connection to `host:port`, authenticated (`AUTH [user] password` when a password is set)
/// and on database `db`.
fn open(
    host: &str,
    port: u16,
    user: Option<&str>,
    password: Option<&str>,
    db: i64,
) -> Result<Connection, String> {
    let mut connection = Connection::connect(host, port, CONNECT_TIMEOUT, IO_TIMEOUT)
        .map_err(|e| describe_error(&e))?;
    let refused = |reply: Reply| match reply {
        Reply::Error { code, detail } => Err(format!("{code} {detail}")),
        Reply::Value(_) => Ok(()),
    };
    if let Some(password) = password {
        let reply = match user {
            Some(user) => connection.call(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
            None => connection.call(&[b"AUTH", password.as_bytes()]),
        };
        refused(reply.map_err(|e| describe_error(&e))?)?;
    }
    if db != 0 {
        let db = db.to_string();
        refused(
            connection
                .call(&[b"SELECT", db.as_bytes()])
                .map_err(|e| describe_error(&e))?,
        )?;
    }
    Ok(connection)
}

/// A connection to one cluster node (database 0).
pub fn open_node(
    node: &(String, u16),
    user: Option<&str>,
    password: Option<&str>,
) -> Result<Connection, String> {
    open(&node.0, node.1, user, password, 0)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

impl Connector {
    pub fn new(
        settings: RedisSettings,
        source: &'static str,
        health: Arc<Health>,
    ) -> Result<Connector, String> {
        Ok(Connector {
            settings,
            source,
            sha: std::sync::OnceLock::new(),
            epoch: AtomicU64::new(0),
            master: Mutex::new(None),
            connections_made: AtomicU64::new(0),
            health,
        })
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The master the Sentinels name now, asked of each in turn.
    fn ask_sentinels(&self, name: &str) -> Result<(String, u16), String> {
        let mut last = String::from("no Sentinel answered");
        for sentinel in &self.settings.addresses {
            let asked = open(
                &sentinel.host,
                sentinel.port,
                sentinel.user.as_deref(),
                sentinel.password.as_deref(),
                0,
            )
            .and_then(|mut connection| {
                connection
                    .call(&[b"SENTINEL", b"get-master-addr-by-name", name.as_bytes()])
                    .map_err(|e| describe_error(&e))
            })
            .and_then(|reply| match reply {
                Reply::Value(Value::Array(parts)) if parts.len() == 2 => {
                    let host = text(&parts[0]).ok_or("a master without a host")?;
                    let port = text(&parts[1])
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or("a master without a port")?;
                    Ok(Some((host, port)))
                }
                Reply::Value(_) => Ok(None),
                Reply::Error { code, detail } => Err(format!("{code} {detail}")),
            });
            match asked {
                Ok(Some(master)) => return Ok(master),
                Ok(None) => last = format!("the Sentinels know no master named {name:?}"),
                Err(e) => last = format!("Sentinel {}: {e}", sentinel.shown()),
            }
        }
        Err(last)
    }

    /// Asks the Sentinels again; moves the epoch when they name another master.
    pub fn poll_sentinels(&self) {
        let Mode::Sentinel(name) = &self.settings.mode else {
            return;
        };
        if let Ok(master) = self.ask_sentinels(name) {
            self.use_master(master);
        }
    }

    fn use_master(&self, master: (String, u16)) {
        let mut current = lock(&self.master);
        if current.as_ref() != Some(&master) {
            let shown = Address {
                host: master.0.clone(),
                port: master.1,
                user: None,
                password: None,
                db: 0,
            }
            .shown();
            *lock(&self.health.master) = Some(shown);
            *current = Some(master);
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Forgets the master (it failed or answered READONLY): the next connection asks again.
    fn forget_master(&self) {
        if matches!(self.settings.mode, Mode::Sentinel(_)) {
            *lock(&self.master) = None;
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A plain connection to the one server (standalone) or the master (Sentinel), or to the
    /// first seed node that answers (Cluster: for the change channel, which every node relays).
    pub fn connect_plain(&self) -> Result<Connection, String> {
        match &self.settings.mode {
            Mode::Standalone => {
                let a = &self.settings.addresses[0];
                let password = self.settings.password_for(a);
                open(
                    &a.host,
                    a.port,
                    a.user.as_deref(),
                    password.as_deref(),
                    a.db,
                )
            }
            Mode::Sentinel(name) => {
                let known = lock(&self.master).clone();
                let (host, port) = match known {
                    Some(master) => master,
                    None => {
                        let master = self.ask_sentinels(name)?;
                        self.use_master(master.clone());
                        master
                    }
                };
                let mut connection = open(&host, port, None, self.settings.password.as_deref(), 0)?;
                // A master demoted since the Sentinels were asked must not take writes.
                let role = connection
                    .call(&[b"ROLE"])
                    .map_err(|e| describe_error(&e))?;
                let role = match role {
                    Reply::Value(Value::Array(parts)) => parts,
                    _ => Vec::new(),
                };
                match role.first() {
                    Some(Value::BulkString(b)) if b == b"master" => Ok(connection),
                    _ => {
                        self.forget_master();
                        Err(format!("{host}:{port} is not a master"))
                    }
                }
            }
            Mode::Cluster => {
                let mut last = String::from("no seed node answered");
                for a in &self.settings.addresses {
                    let password = self.settings.password_for(a);
                    match open(&a.host, a.port, a.user.as_deref(), password.as_deref(), 0) {
                        Ok(connection) => return Ok(connection),
                        Err(e) => last = format!("{}: {e}", a.shown()),
                    }
                }
                Err(last)
            }
        }
    }

    fn connect(&self) -> Result<Conn, String> {
        if self.settings.mode != Mode::Cluster {
            let mut connection = self.connect_plain()?;
            if self.sha.get().is_none() {
                let loaded = connection.call(&[b"SCRIPT", b"LOAD", self.source.as_bytes()]);
                if let Ok(Reply::Value(Value::BulkString(sha))) = loaded {
                    let _ = self.sha.set(sha);
                }
            }
            return Ok(Conn::Single(connection));
        }
        // Every node is reached with the first seed's credentials (or --store_password).
        let first = &self.settings.addresses[0];
        let seeds: Vec<(String, u16)> = self
            .settings
            .addresses
            .iter()
            .map(|a| (a.host.clone(), a.port))
            .collect();
        ClusterConn::connect(
            &seeds,
            first.user.clone(),
            self.settings.password_for(first),
        )
        .map(|c| Conn::Cluster(Box::new(c)))
    }

    fn pack(&self, command: &Command, by_text: bool) -> Packed {
        match command {
            Command::Plain(args) => args.clone(),
            Command::Script { namespace, args } => {
                let mut packed: Packed = Vec::with_capacity(args.len() + 5);
                match self.sha.get().filter(|_| !by_text) {
                    Some(sha) => {
                        packed.push(b"EVALSHA".to_vec());
                        packed.push(sha.clone());
                    }
                    None => {
                        packed.push(b"EVAL".to_vec());
                        packed.push(self.source.as_bytes().to_vec());
                    }
                }
                packed.push(b"2".to_vec());
                packed.push(records_key(namespace));
                packed.push(migration_guard_key(namespace));
                packed.extend(args.iter().cloned());
                packed
            }
        }
    }
}

fn records_key(namespace: &str) -> Vec<u8> {
    format!("{namespace}{RECORDS}").into_bytes()
}

fn migration_guard_key(namespace: &str) -> Vec<u8> {
    format!("{namespace}{MIGRATION_GUARD}").into_bytes()
}

/// The key a command works on (its first argument after the name), for Cluster routing; `None`
/// for commands without one (`TIME`, `PING`).
fn key_of(command: &Command) -> Option<Vec<u8>> {
    match command {
        Command::Script { namespace, .. } => Some(records_key(namespace)),
        Command::Plain(args) => args.get(1).cloned(),
    }
}

/// The error codes that mean Redis cannot do the work now (spec §4.1); a connection that gets
/// `READONLY` or `MASTERDOWN` talks to a replica and is made again.
fn unusable(code: &str) -> Option<bool> {
    match code {
        "READONLY" | "MASTERDOWN" => Some(true),
        "LOADING" | "CLUSTERDOWN" | "OOM" | "NOPERM" | "NOAUTH" | "WRONGPASS" | "BUSY"
        | "TRYAGAIN" | "MISCONF" | "NOREPLICAS" | "MOVED" | "ASK" | "CROSSSLOT" => Some(false),
        _ => None,
    }
}

/// The error codes of a slot in the middle of a migration (or of a slot map that is out of
/// date): Redis works, the caller tries again shortly ([`is_in_transit`]).
const IN_TRANSIT: [&str; 3] = ["TRYAGAIN", "ASK", "MOVED"];

/// Whether a failure is a slot in transit, which passes once the migration ends.
pub fn is_in_transit(failure: &str) -> bool {
    IN_TRANSIT.iter().any(|code| {
        failure
            .strip_prefix(code)
            .is_some_and(|rest| rest.starts_with(' ') || rest.is_empty())
    })
}

/// The queue and the workers.
pub struct Link {
    queue: SyncSender<Job>,
    /// Ends the waits of coroutine callers at their deadlines.
    deadlines: Deadlines,
    pub health: Arc<Health>,
    pub connector: Arc<Connector>,
}

impl Link {
    /// Starts `workers` worker threads (and, in Sentinel mode, the thread that polls the
    /// Sentinels).
    pub fn start(connector: Connector, workers: usize) -> std::io::Result<Link> {
        let (queue, jobs) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let jobs = Arc::new(Mutex::new(jobs));
        let health = connector.health.clone();
        let connector = Arc::new(connector);
        for n in 0..workers.max(1) {
            let jobs = jobs.clone();
            let connector = connector.clone();
            std::thread::Builder::new()
                .name(format!("redis-{n}"))
                .spawn(move || work(&jobs, &connector))?;
        }
        if matches!(connector.settings.mode, Mode::Sentinel(_)) {
            let polled = Arc::downgrade(&connector);
            std::thread::Builder::new()
                .name("redis-sentinel".into())
                .spawn(move || loop {
                    std::thread::sleep(SENTINEL_POLL);
                    let Some(connector) = polled.upgrade() else {
                        return;
                    };
                    connector.poll_sentinels();
                })?;
        }
        let marked = health.clone();
        let deadlines = Deadlines::start(move || marked.fail(NO_ANSWER_IN_TIME))?;
        Ok(Link {
            queue,
            deadlines,
            health,
            connector,
        })
    }

    /// Runs the commands in order on one connection and returns their answers, or why there are
    /// none, by `deadline` at the latest. Safe to call on a coroutine: it parks, never blocks.
    pub fn call(&self, commands: Vec<Command>, deadline: Instant) -> Result<Vec<Reply>, Failure> {
        let answer = Arc::new(Answer::new(deadline));
        let job = Job {
            commands,
            deadline,
            answer: answer.clone(),
        };
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err("too many requests wait for Redis".into()),
            Err(TrySendError::Disconnected(_)) => return Err("the Redis workers stopped".into()),
        }
        if answer.on_coroutine {
            let wait: Arc<dyn Wait> = answer.clone();
            self.deadlines.register(Arc::downgrade(&wait));
        }
        match answer.wait() {
            Some(result) => result,
            None => {
                self.health.fail(NO_ANSWER_IN_TIME);
                Err(NO_ANSWER_IN_TIME.into())
            }
        }
    }
}

/// One worker: takes batches of jobs, keeps one connection, reconnects with capped backoff.
fn work(jobs: &Mutex<Receiver<Job>>, connector: &Connector) {
    let health = &connector.health;
    let mut conn: Option<Conn> = None;
    let mut epoch = connector.epoch();
    let mut backoff = MIN_BACKOFF;
    let mut retry_at = Instant::now();
    let mut last_error = String::from("not connected yet");
    let mut seen_made = connector.connections_made.load(Ordering::SeqCst);
    loop {
        let batch: Vec<Job> = {
            let jobs = lock(jobs);
            let Ok(first) = jobs.recv() else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        let now = Instant::now();
        let (batch, late): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.deadline > now);
        for job in late {
            job.answer.send(Err(NO_ANSWER_IN_TIME.into()));
        }
        if batch.is_empty() {
            continue;
        }
        if connector.epoch() != epoch {
            // Another master (Sentinel): connect to it now, whatever the backoff said.
            epoch = connector.epoch();
            conn = None;
            retry_at = Instant::now();
            backoff = MIN_BACKOFF;
        }
        if conn.is_none() {
            let made = connector.connections_made.load(Ordering::SeqCst);
            if Instant::now() < retry_at && made == seen_made {
                fail_all(batch, &last_error);
                continue;
            }
            match connector.connect() {
                Ok(connected) => {
                    conn = Some(connected);
                    backoff = MIN_BACKOFF;
                    seen_made = connector.connections_made.fetch_add(1, Ordering::SeqCst) + 1;
                }
                Err(e) => {
                    // Only a connection made after this failure ends the backoff early.
                    seen_made = made;
                    last_error = e;
                    health.fail(&last_error);
                    connector.forget_master();
                    epoch = connector.epoch();
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    fail_all(batch, &last_error);
                    continue;
                }
            }
        }
        let Some(connection) = conn.as_mut() else {
            continue;
        };
        let mut outcome = run_batch(connector, connection, &batch);
        // A connection that broke while idle (Redis restarted, a failover, an idle reset) is
        // made again once at once, so a restart costs no request its answer; a timeout is not
        // retried, since the caller's deadline would pass in the second wait.
        if let Err(Broken(why)) = &outcome {
            if why != TIMED_OUT {
                if let Ok(mut fresh) = connector.connect() {
                    seen_made = connector.connections_made.fetch_add(1, Ordering::SeqCst) + 1;
                    outcome = run_batch(connector, &mut fresh, &batch);
                    conn = Some(fresh);
                }
            }
        }
        match outcome {
            Ok((answers, drop_connection)) => {
                if drop_connection {
                    conn = None;
                    connector.forget_master();
                    epoch = connector.epoch();
                }
                deliver(batch, answers);
            }
            Err(Broken(e)) => {
                last_error = e;
                health.fail(&last_error);
                conn = None;
                connector.forget_master();
                epoch = connector.epoch();
                // Reconnect on the next batch at once; the backoff grows only if that fails.
                retry_at = Instant::now();
                fail_all(batch, &last_error);
            }
        }
    }
}

/// Hands a batch's answers to their callers. Callers that are coroutines are woken from
/// coroutines on the workers, one spawn per worker for the lot rather than an eventfd write
/// each; plain threads (which a worker's coroutine must never wait for) are woken from here.
fn deliver(batch: Vec<Job>, answers: Answers) {
    let mut to_coroutines = Vec::with_capacity(batch.len());
    for (job, answer) in batch.into_iter().zip(answers) {
        if job.answer.on_coroutine {
            to_coroutines.push((job.answer, answer));
        } else {
            job.answer.send(answer);
        }
    }
    crate::net::run_on_workers(to_coroutines, |(caller, answer)| caller.send(answer));
}

fn fail_all(batch: Vec<Job>, why: &str) {
    for job in batch {
        job.answer.send(Err(why.to_string()));
    }
}

type Answers = Vec<Result<Vec<Reply>, Failure>>;

/// The script operation of a heartbeat: a batch's heartbeats of one namespace (through the
/// same API) share one script call, which takes their ids as `ARGV[4..]` and answers
/// `{{result per id}, {}}`.
pub const HEARTBEAT_OP: &[u8] = b"hb";

/// Where a job's command finds its reply among the commands sent.
enum Route {
    /// The reply of command `i`.
    Whole(usize),
    /// Entry `k` of the shared heartbeat call `i`.
    Heartbeat(usize, usize),
}

/// The commands of a batch as they go out, with heartbeats of one namespace merged into one
/// script call, and where each job's replies are.
fn coalesce(batch: &[Job]) -> (Vec<Command>, Vec<Vec<Route>>) {
    let mut commands: Vec<Command> = Vec::new();
    // (namespace, node, API flag) → the merged call's index.
    let mut shared: std::collections::HashMap<(&str, &[u8], &[u8]), usize> =
        std::collections::HashMap::new();
    let routes = batch
        .iter()
        .map(|job| {
            job.commands
                .iter()
                .map(|command| match command {
                    Command::Script { namespace, args }
                        if job.commands.len() == 1
                            && args.len() == 4
                            && args[0] == HEARTBEAT_OP =>
                    {
                        let group = (namespace.as_str(), args[1].as_slice(), args[2].as_slice());
                        let at = *shared.entry(group).or_insert_with(|| {
                            commands.push(Command::Script {
                                namespace: namespace.clone(),
                                args: args[..3].to_vec(),
                            });
                            commands.len() - 1
                        });
                        let Command::Script { args: merged, .. } = &mut commands[at] else {
                            unreachable!("a merged heartbeat is a script call")
                        };
                        merged.push(args[3].clone());
                        Route::Heartbeat(at, merged.len() - 4)
                    }
                    other => {
                        commands.push(other.clone());
                        Route::Whole(commands.len() - 1)
                    }
                })
                .collect()
        })
        .collect();
    (commands, routes)
}

/// Entry `k` of a shared heartbeat call's reply, shaped as the reply of a call of its own.
fn heartbeat_reply(reply: &Reply, k: usize) -> Reply {
    let Reply::Value(Value::Array(parts)) = reply else {
        return reply.clone();
    };
    let result = match parts.first() {
        Some(Value::Array(results)) => results.get(k).cloned().unwrap_or(Value::Nil),
        _ => Value::Nil,
    };
    Reply::Value(Value::Array(vec![result, Value::Array(Vec::new())]))
}

/// Runs a batch; the flag says the connection must be made again (it reached a replica).
fn run_batch(
    connector: &Connector,
    conn: &mut Conn,
    batch: &[Job],
) -> Result<(Answers, bool), Broken> {
    let (sent, routes) = coalesce(batch);
    let commands: Vec<(Option<Vec<u8>>, Packed)> = sent
        .iter()
        .map(|c| (key_of(c), connector.pack(c, false)))
        .collect();
    let mut replies = conn.run(&commands)?;
    // Scripts Redis does not know yet (a restart, a failover, a new cluster node) go again by
    // their text, which also teaches Redis the hash.
    let retry: Vec<usize> = replies
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Reply::Error { code, .. } if code == "NOSCRIPT"))
        .map(|(i, _)| i)
        .collect();
    if !retry.is_empty() {
        let again: Vec<(Option<Vec<u8>>, Packed)> = retry
            .iter()
            .map(|&i| (key_of(&sent[i]), connector.pack(&sent[i], true)))
            .collect();
        for (i, reply) in retry.into_iter().zip(conn.run(&again)?) {
            replies[i] = reply;
        }
    }
    let mut reconnect = false;
    let mut failure: Option<String> = None;
    for reply in &replies {
        if let Reply::Error { code, detail } = reply {
            if let Some(replica) = unusable(code) {
                reconnect |= replica;
                if !IN_TRANSIT.contains(&code.as_str()) {
                    failure = Some(format!("{code} {detail}"));
                }
            }
        }
    }
    match &failure {
        Some(message) => connector.health.fail(message),
        None => connector.health.ok(),
    }
    let answers = routes
        .iter()
        .map(|routes| {
            let mine: Vec<Reply> = routes
                .iter()
                .map(|route| match *route {
                    Route::Whole(i) => replies[i].clone(),
                    Route::Heartbeat(i, k) => heartbeat_reply(&replies[i], k),
                })
                .collect();
            let failed = mine.iter().find_map(|r| match r {
                Reply::Error { code, detail } if unusable(code).is_some() => {
                    Some(format!("{code} {detail}"))
                }
                _ => None,
            });
            match failed {
                Some(why) => Err(why),
                None => Ok(mine),
            }
        })
        .collect();
    Ok((answers, reconnect))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(commands: Vec<Command>) -> Job {
        let answer = Arc::new(Answer::new(Instant::now() + Duration::from_secs(1)));
        Job {
            commands,
            deadline: Instant::now() + Duration::from_secs(1),
            answer,
        }
    }

    fn heartbeat(namespace: &str, id: &str) -> Command {
        Command::Script {
            namespace: namespace.into(),
            args: vec![
                HEARTBEAT_OP.to_vec(),
                b"node".to_vec(),
                b"0".to_vec(),
                id.into(),
            ],
        }
    }

    #[test]
    fn heartbeats_of_one_namespace_share_one_call() {
        let batch = vec![
            job(vec![heartbeat("a", "1")]),
            job(vec![Command::plain(&[b"PING"])]),
            job(vec![heartbeat("b", "2")]),
            job(vec![heartbeat("a", "3")]),
        ];
        let (sent, routes) = coalesce(&batch);
        assert_eq!(sent.len(), 3, "a's two heartbeats, the PING, b's heartbeat");
        let Command::Script { namespace, args } = &sent[0] else {
            panic!("a script call first")
        };
        assert_eq!(namespace, "a");
        assert_eq!(&args[3..], [b"1".to_vec(), b"3".to_vec()]);
        assert!(matches!(routes[3][..], [Route::Heartbeat(0, 1)]));
        assert!(matches!(routes[1][..], [Route::Whole(1)]));
        let reply = Reply::Value(Value::Array(vec![
            Value::Array(vec![Value::Int(1), Value::Int(0)]),
            Value::Array(Vec::new()),
        ]));
        assert_eq!(
            heartbeat_reply(&reply, 1),
            Reply::Value(Value::Array(vec![Value::Int(0), Value::Array(Vec::new())]))
        );
    }

    #[test]
    fn a_slot_in_transit_is_told_from_other_failures() {
        assert!(is_in_transit(
            "TRYAGAIN Multiple keys request during rehashing of slot"
        ));
        assert!(is_in_transit("ASK 3999 127.0.0.1:6381"));
        assert!(is_in_transit("MOVED 3999 127.0.0.1:6381"));
        assert!(!is_in_transit("CLUSTERDOWN The cluster is down"));
        assert!(!is_in_transit("ASKING"));
    }
}
