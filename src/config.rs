//! Every option of every command, once: its flag, its `A8_` environment twin, its default, its
//! value syntax, its validation, whether it is a secret, and its `--help` line.
//!
//! Each command has one option table (`SERVER`, `TOKEN`; the sidecar's goes next to them) and
//! one parser engine reads them all. Precedence is flag > environment > default. Flags are
//! accepted Go-style (`-name value`, `-name=value`, `--name value`, `--name=value`); a boolean flag
//! alone means true. Every bad value is a [`ConfigError`] whose one-line message names the flag and
//! its env var; `main` prints it and exits with status 2 (spec D13).
//!
//! The startup summary of the server ([`Command::Serve`]'s `summary`) is rendered from the table
//! and the values as they were read, and an option marked `secret` is recorded only as `(set)` or
//! `(unset)`: no code path can print a secret, and secret values live in [`Secret`], whose `Debug`
//! masks them too.

use crate::registry::namespace::Namespace;
use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// The value syntax an option takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Bool,
    Text,
    Duration,
    List,
    Ip,
}

impl Kind {
    fn placeholder(self) -> &'static str {
        match self {
            Kind::Int => "<int>",
            Kind::Bool => "[=<bool>]",
            Kind::Text => "<text>",
            Kind::Duration => "<duration>",
            Kind::List => "<value>...",
            Kind::Ip => "<ip>",
        }
    }
}

/// One option: the single place that names it.
struct OptionSpec {
    name: &'static str,
    kind: Kind,
    default: &'static str,
    /// Never shown: the startup summary says only whether it is set.
    secret: bool,
    help: &'static str,
}

/// The server's options, in `--help` order. The README's configuration table is checked against
/// the `--help` output by a static test, so the two cannot drift.
#[rustfmt::skip]
const SERVER_OPTIONS: &[OptionSpec] = &[
    OptionSpec { name: "api_bind", kind: Kind::Ip, default: "0.0.0.0", secret: false, help: "address the API listens on (an IP literal, e.g. 127.0.0.1 or ::1)" },
    OptionSpec { name: "api_port", kind: Kind::Int, default: "8080", secret: false, help: "API listen port, 0..65535" },
    OptionSpec { name: "workers", kind: Kind::Int, default: "CPUs available", secret: false, help: "worker threads serving connections, >= 1" },
    OptionSpec { name: "max_body_size", kind: Kind::Int, default: "1048576", secret: false, help: "largest request body in bytes, 1..1073741824 (larger: 413)" },
    OptionSpec { name: "idle_timeout", kind: Kind::Duration, default: "60s", secret: false, help: "close keep-alive connections idle this long, > 0" },
    OptionSpec { name: "request_timeout", kind: Kind::Duration, default: "30s", secret: false, help: "a request's head and body must arrive within this of its first byte, > 0 (late body: 408)" },
    OptionSpec { name: "max_connections", kind: Kind::Int, default: "16384", secret: false, help: "most open API connections, 1..1000000 (one more gets 503 and is closed)" },
    OptionSpec { name: "max_body_memory", kind: Kind::Int, default: "67108864", secret: false, help: "bytes all request bodies may hold at once, >= max_body_size (over it: 503)" },
    OptionSpec { name: "log_level", kind: Kind::Text, default: "info", secret: false, help: "debug, info, warn, warning, error, fatal or panic" },
    OptionSpec { name: "log_format", kind: Kind::Text, default: "text", secret: false, help: "text, json or logstash" },
    OptionSpec { name: "auth_mode", kind: Kind::List, default: "", secret: false, help: "trusted and/or jwt, tried in order (repeatable; comma-separated in env); empty: single tenant" },
    OptionSpec { name: "jwt_secret", kind: Kind::Text, default: "", secret: true, help: "HS256 secret (raw bytes), required with --auth_mode jwt" },
    OptionSpec { name: "require_https", kind: Kind::Bool, default: "false", secret: false, help: "redirect plain-HTTP API requests to https (301)" },
    OptionSpec { name: "namespace_capacity", kind: Kind::Int, default: "-1", secret: false, help: "most instances per namespace; negative: unlimited" },
    OptionSpec { name: "default_ttl", kind: Kind::Duration, default: "30s", secret: false, help: "TTL of a registration that gives none; within [min_ttl, max_ttl]" },
    OptionSpec { name: "min_ttl", kind: Kind::Duration, default: "10s", secret: false, help: "smallest TTL; shorter requests are raised to it" },
    OptionSpec { name: "max_ttl", kind: Kind::Duration, default: "10m", secret: false, help: "largest TTL; longer requests are lowered to it" },
    OptionSpec { name: "store", kind: Kind::Text, default: "inmem", secret: false, help: "inmem or redis" },
    OptionSpec { name: "store_address", kind: Kind::Text, default: "", secret: false, help: "Redis host:port or redis://[user[:password]@]host[:port][/db], comma-separated with --store_sentinel or --store_cluster; required with --store redis" },
    OptionSpec { name: "store_password", kind: Kind::Text, default: "", secret: true, help: "Redis AUTH password for addresses whose URL carries none, sent only if non-empty" },
    OptionSpec { name: "store_sentinel", kind: Kind::Text, default: "", secret: false, help: "name of the master Redis Sentinel watches; the addresses are then Sentinels" },
    OptionSpec { name: "store_cluster", kind: Kind::Bool, default: "false", secret: false, help: "the addresses are seed nodes of a Redis Cluster" },
    OptionSpec { name: "replication", kind: Kind::Bool, default: "false", secret: false, help: "replicate the in-memory store between cluster peers (only with --store inmem)" },
    OptionSpec { name: "replication_port", kind: Kind::Int, default: "6100", secret: false, help: "replication listener port, 1..65535 with --replication" },
    OptionSpec { name: "replication_bind", kind: Kind::Text, default: "the value of --api_bind", secret: false, help: "address the replication listener binds (an IP literal)" },
    OptionSpec { name: "replication_address", kind: Kind::Text, default: "", secret: false, help: "host:port other nodes reach this node at (IPv6 in brackets); empty: derived" },
    OptionSpec { name: "replication_secret", kind: Kind::Text, default: "", secret: true, help: "shared secret: links authenticate with HMAC-SHA256 before any state moves" },
    OptionSpec { name: "peers", kind: Kind::List, default: "", secret: false, help: "static peers host:port, DNS names re-resolved every 10s (repeatable; comma-separated)" },
    OptionSpec { name: "sync_timeout", kind: Kind::Duration, default: "30s", secret: false, help: "longest wait for the initial peer sync before the API opens" },
    OptionSpec { name: "cluster_dir", kind: Kind::Text, default: "/tmp/sd-cluster", secret: false, help: "shared membership directory; used when given or without --peers; \"\" turns it off" },
    OptionSpec { name: "cluster_size", kind: Kind::Int, default: "0", secret: false, help: "expected cluster size, reported in /uptime only, >= 0" },
    OptionSpec { name: "k8s_url", kind: Kind::Text, default: "", secret: false, help: "Kubernetes API server URL (http:// or https://) or in-cluster: mirror its endpoints read-only, namespace N into namespace N" },
    OptionSpec { name: "k8s_token", kind: Kind::Text, default: "", secret: true, help: "bearer token for the Kubernetes API" },
    OptionSpec { name: "k8s_token_file", kind: Kind::Text, default: "", secret: false, help: "file holding the Kubernetes bearer token, read again after a 401 and every 60s" },
    OptionSpec { name: "k8s_ca_file", kind: Kind::Text, default: "", secret: false, help: "PEM CA certificates the Kubernetes API server's certificate must chain to" },
    OptionSpec { name: "k8s_max_namespaces", kind: Kind::Int, default: "100", secret: false, help: "most namespaces mirrored from Kubernetes at once, >= 1" },
    OptionSpec { name: "k8s_idle_timeout", kind: Kind::Duration, default: "10m", secret: false, help: "stop mirroring a namespace without API requests for this long, >= 1s (never default)" },
    OptionSpec { name: "eureka_url", kind: Kind::List, default: "", secret: false, help: "remote Eureka base URLs (http:// or https://) to mirror read-only into the default namespace, tried in order (repeatable; comma-separated in env)" },
    OptionSpec { name: "catalog_poll", kind: Kind::Duration, default: "30s", secret: false, help: "interval of the remote Eureka catalog's refresh, >= 1s" },
    OptionSpec { name: "fs_catalog", kind: Kind::Text, default: "", secret: false, help: "directory of <namespace>.json and <namespace>.conf files to mirror read-only (an existing directory)" },
];

/// The largest `--max_body_size`: 1 GiB. A body is held whole in memory before it is decoded.
const MAX_BODY_SIZE_LIMIT: i64 = 1 << 30;
/// The largest `--max_connections`; far beyond what one process's descriptors allow anyway.
const MAX_CONNECTIONS_LIMIT: i64 = 1_000_000;

/// The options of `a8registry token`, which mints a JWT for `--auth_mode jwt`. They have no
/// environment twins: a stray `A8_TTL` or `A8_NAMESPACE` must not change what is minted.
#[rustfmt::skip]
const TOKEN_OPTIONS: &[OptionSpec] = &[
    OptionSpec { name: "secret", kind: Kind::Text, default: "", secret: true, help: "the registry's --jwt_secret, required" },
    OptionSpec { name: "namespace", kind: Kind::Text, default: "", secret: false, help: "the namespace claim, required (a valid namespace name)" },
    OptionSpec { name: "ttl", kind: Kind::Duration, default: "", secret: false, help: "lifetime, > 0: the token expires then (exp claim); empty: it never expires, with a warning on stderr" },
];

/// The options of `a8registry sidecar` (sidecar contract §2), with the original `a8sidecar`'s names
/// and defaults, then the new ones, then the original's options of features outside the scope,
/// which are type-checked and ignored with a warning (`sidecar::settings::IGNORED_OPTIONS`).
/// Precedence is flag > environment > `--config` file > default; the merge with the file and
/// the validation are in `sidecar::settings`.
#[rustfmt::skip]
const SIDECAR_OPTIONS: &[OptionSpec] = &[
    OptionSpec { name: "config", kind: Kind::Text, default: "", secret: false, help: "YAML configuration file; flags and environment variables override it" },
    OptionSpec { name: "register", kind: Kind::Bool, default: "false", secret: false, help: "register the application and heartbeat for it; required" },
    OptionSpec { name: "service", kind: Kind::Text, default: "", secret: false, help: "service name, optionally followed by :tag,tag...; required" },
    OptionSpec { name: "endpoint_host", kind: Kind::Text, default: "", secret: false, help: "host of the registered endpoint; empty: the host's first non-loopback address" },
    OptionSpec { name: "endpoint_port", kind: Kind::Int, default: "0", secret: false, help: "port of the registered endpoint, 1..65535; required" },
    OptionSpec { name: "endpoint_type", kind: Kind::Text, default: "http", secret: false, help: "http, https, tcp, udp or user" },
    OptionSpec { name: "discovery_adapter", kind: Kind::Text, default: "amalgam8", secret: false, help: "must be amalgam8 (for a Eureka server: --registry_protocol eureka)" },
    OptionSpec { name: "registry_url", kind: Kind::Text, default: "", secret: false, help: "registry base URL, http:// or https://, e.g. http://registry:8080; required" },
    OptionSpec { name: "registry_token", kind: Kind::Text, default: "", secret: true, help: "sent as Authorization: Bearer <token> when set (the tenant token)" },
    OptionSpec { name: "registry_protocol", kind: Kind::Text, default: "amalgam8", secret: false, help: "amalgam8 (/api/v1) or eureka (--registry_url is then the Eureka base URL)" },
    OptionSpec { name: "ttl", kind: Kind::Duration, default: "60s", secret: false, help: "TTL asked for at registration, >= 1s; heartbeats every answered TTL / 3" },
    OptionSpec { name: "eureka_app", kind: Kind::Text, default: "service name upper-cased", secret: false, help: "Eureka application name (with --registry_protocol eureka)" },
    OptionSpec { name: "eureka_instance_id", kind: Kind::Text, default: "<host>:<service>:<port>", secret: false, help: "Eureka instance id (with --registry_protocol eureka)" },
    OptionSpec { name: "healthchecks", kind: Kind::List, default: "", secret: false, help: "http://..., https://..., tcp://host:port or file:///path checks (repeatable; comma-separated in env)" },
    OptionSpec { name: "healthcheck_interval", kind: Kind::Duration, default: "30s", secret: false, help: "interval of the --healthchecks checks, > 0" },
    OptionSpec { name: "healthcheck_timeout", kind: Kind::Duration, default: "5s", secret: false, help: "timeout of the --healthchecks checks, > 0" },
    OptionSpec { name: "supervise", kind: Kind::Bool, default: "false", secret: false, help: "deprecated and ignored: the command after the options is always supervised" },
    OptionSpec { name: "log_level", kind: Kind::Text, default: "info", secret: false, help: "debug, info, warn, warning, error, fatal or panic" },
    OptionSpec { name: "log_format", kind: Kind::Text, default: "text", secret: false, help: "text, json or logstash" },
    OptionSpec { name: "proxy", kind: Kind::Bool, default: "false", secret: false, help: "not included: true is a configuration error" },
    OptionSpec { name: "dns", kind: Kind::Bool, default: "false", secret: false, help: "not included: true is a configuration error" },
    OptionSpec { name: "kubernetes_pod_name", kind: Kind::Text, default: "", secret: false, help: "not included: a non-empty value is a configuration error" },
    OptionSpec { name: "proxy_adapter", kind: Kind::Text, default: "envoy", secret: false, help: "ignored (proxy not included)" },
    OptionSpec { name: "proxy_tls", kind: Kind::Bool, default: "false", secret: false, help: "ignored (proxy not included)" },
    OptionSpec { name: "proxy_cert_chain_file", kind: Kind::Text, default: "", secret: false, help: "ignored (proxy not included)" },
    OptionSpec { name: "proxy_private_key_file", kind: Kind::Text, default: "", secret: false, help: "ignored (proxy not included)" },
    OptionSpec { name: "proxy_ca_cert_file", kind: Kind::Text, default: "", secret: false, help: "ignored (proxy not included)" },
    OptionSpec { name: "rules_adapter", kind: Kind::Text, default: "amalgam8", secret: false, help: "ignored (rules client not included)" },
    OptionSpec { name: "controller_url", kind: Kind::Text, default: "", secret: false, help: "ignored (rules client not included)" },
    OptionSpec { name: "controller_token", kind: Kind::Text, default: "", secret: true, help: "ignored (rules client not included)" },
    OptionSpec { name: "controller_poll", kind: Kind::Duration, default: "15s", secret: false, help: "ignored (rules client not included)" },
    OptionSpec { name: "dns_port", kind: Kind::Int, default: "8053", secret: false, help: "ignored (DNS server not included)" },
    OptionSpec { name: "dns_domain", kind: Kind::Text, default: "amalgam8", secret: false, help: "ignored (DNS server not included)" },
    OptionSpec { name: "registry_poll", kind: Kind::Duration, default: "15s", secret: false, help: "ignored (discovery cache not included)" },
    OptionSpec { name: "kubernetes_url", kind: Kind::Text, default: "", secret: false, help: "ignored (Kubernetes lookup not included)" },
    OptionSpec { name: "kubernetes_token", kind: Kind::Text, default: "", secret: true, help: "ignored (Kubernetes lookup not included)" },
    OptionSpec { name: "kubernetes_namespace", kind: Kind::Text, default: "default", secret: false, help: "ignored (Kubernetes lookup not included)" },
    OptionSpec { name: "eureka_url", kind: Kind::List, default: "", secret: false, help: "ignored (discovery not included; for registering into Eureka see --registry_protocol)" },
];

/// How the sidecar's error lines begin.
pub(crate) const SIDECAR_COMMAND: &str = "a8registry sidecar";

/// A command line: its name (which starts its error lines), usage and option table.
struct CommandSpec {
    /// `a8registry` or `a8registry <subcommand>`.
    name: &'static str,
    usage: &'static str,
    options: &'static [OptionSpec],
    /// Whether each option also reads its `A8_<FLAG>` environment variable.
    env_twins: bool,
}

/// `a8registry sidecar [options] [--] [command [args...]]`.
const SIDECAR: CommandSpec = CommandSpec {
    name: SIDECAR_COMMAND,
    usage: "a8registry sidecar [options] [--] [command [args...]]",
    options: SIDECAR_OPTIONS,
    env_twins: true,
};

/// The server: `a8registry [options]`.
const SERVER: CommandSpec = CommandSpec {
    name: "a8registry",
    usage: "a8registry [options]",
    options: SERVER_OPTIONS,
    env_twins: true,
};

/// `a8registry token --secret S --namespace N [--ttl 24h]`.
const TOKEN: CommandSpec = CommandSpec {
    name: "a8registry token",
    usage: "a8registry token --secret S --namespace N [--ttl 24h]",
    options: TOKEN_OPTIONS,
    env_twins: false,
};

impl CommandSpec {
    fn spec(&self, name: &str) -> &'static OptionSpec {
        self.options
            .iter()
            .find(|o| o.name == name)
            .expect("every option read by the parser is in its command's table")
    }

    /// How error lines name an option: `--flag (A8_FLAG)`, or `--flag` without env twins.
    fn flag(&self, name: &str) -> String {
        if self.env_twins {
            format!("--{name} ({})", env_name(name))
        } else {
            format!("--{name}")
        }
    }

    fn error(&'static self, message: String) -> ConfigError {
        ConfigError {
            command: self.name,
            message,
        }
    }

    fn invalid(&'static self, name: &str, value: &str, why: &str) -> ConfigError {
        self.error(format!(
            "invalid value {} for {}: {why}",
            quoted(value),
            self.flag(name)
        ))
    }

    /// The `--help` text: usage, then every option with its env name (if any) and default.
    fn help(&self) -> String {
        let mut out = String::new();
        if self.name == SIDECAR_COMMAND {
            out.push_str(
                "a8registry sidecar: registers an application, heartbeats while it is healthy \
                 and supervises it\n\nUsage:\n",
            );
            out.push_str(&format!("  {}\n\n", self.usage));
            out.push_str("Options (flag > environment variable > --config file > default):\n");
        } else if self.env_twins {
            out.push_str(
                "a8registry: a service registry with the Amalgam8 and Eureka APIs\n\n\
                 Usage:\n",
            );
            out.push_str(&format!(
                "  {}\n  {}\n  {}\n\n",
                self.usage, TOKEN.usage, SIDECAR.usage
            ));
            out.push_str("Options (flag > environment variable > default):\n");
        } else {
            out.push_str(&format!("Usage:\n  {}\n\nOptions:\n", self.usage));
        }
        for o in self.options {
            let default = if o.default.is_empty() {
                "(empty)"
            } else {
                o.default
            };
            let env = if self.env_twins {
                format!("env {}, ", env_name(o.name))
            } else {
                String::new()
            };
            out.push_str(&format!(
                "  --{} {}\n      {env}default {default}: {}\n",
                o.name,
                o.kind.placeholder(),
                o.help
            ));
        }
        out.push_str("  -h, --help\n      print this help\n");
        if self.env_twins {
            out.push_str("  -v, --version\n      print the version\n");
        }
        out
    }
}

/// Log verbosity, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
    Panic,
}

impl LogLevel {
    /// The lowercase name used on the command line and in log lines.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warning",
            LogLevel::Error => "error",
            LogLevel::Fatal => "fatal",
            LogLevel::Panic => "panic",
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
    Logstash,
}

/// One way of turning a bearer token into a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    Trusted,
    Jwt,
}

/// Where instances are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
}

/// The value of an option marked `secret`. `Debug` and `Display` show only `(set)` or `(unset)`,
/// so a secret cannot reach a log line by accident; [`Secret::expose`] is the one way to read it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the code that uses it (an HMAC key, a password on the wire).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    fn mask(value: &str) -> &'static str {
        if value.is_empty() {
            "(unset)"
        } else {
            "(set)"
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Secret::mask(&self.0))
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Secret::mask(&self.0))
    }
}

/// The validated configuration of the server.
#[derive(Clone, Debug)]
pub struct Config {
    pub api_bind: IpAddr,
    pub api_port: u16,
    pub workers: usize,
    pub max_body_size: usize,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_body_memory: usize,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub auth_modes: Vec<AuthMode>,
    pub jwt_secret: Secret,
    pub require_https: bool,
    /// `None` means unlimited.
    pub namespace_capacity: Option<usize>,
    pub default_ttl: Duration,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub store: StoreKind,
    pub store_address: String,
    pub store_password: Secret,
    /// The Redis store's options, validated (with `--store redis`).
    pub redis: Option<crate::store::redis::settings::RedisSettings>,
    pub replication: bool,
    pub replication_port: u16,
    pub sync_timeout: Duration,
    pub cluster_dir: String,
    pub cluster_size: i64,
    /// The cluster options, validated (used with `replication`).
    pub cluster: crate::cluster::ClusterConfig,
    /// The Kubernetes catalog's settings, when `--k8s_url` is given.
    pub kubernetes: Option<crate::catalogs::kubernetes::Settings>,
    /// Startup warnings about the options (logged once the log is set up).
    pub warnings: Vec<String>,
    pub eureka_urls: Vec<String>,
    pub catalog_poll: Duration,
    pub fs_catalog: String,
}

/// What the command line asks for.
pub enum Command {
    Serve {
        config: Box<Config>,
        /// The effective options as one line for the startup log, every secret masked.
        summary: String,
    },
    /// Print this help text and exit 0.
    Help(String),
    Version,
    /// `a8registry sidecar ...`: register, heartbeat and supervise.
    Sidecar(Box<crate::sidecar::SidecarConfig>),
    /// `a8registry token --secret S --namespace N [--ttl 24h]`.
    Token {
        secret: Secret,
        namespace: Namespace,
        ttl: Option<Duration>,
    },
}

/// A configuration error: one line that begins with the command and names the option (and, for
/// the server, its environment variable).
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    command: &'static str,
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.command, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error line of `command` (e.g. [`SIDECAR_COMMAND`]).
    pub(crate) fn new(command: &'static str, message: String) -> ConfigError {
        ConfigError { command, message }
    }
}

/// Most bytes of an outside value (an argument, a file's text) that an error line quotes.
pub(crate) const MAX_QUOTED_BYTES: usize = 200;

/// `value` cut to at most [`MAX_QUOTED_BYTES`] (at a character boundary), with `…` and its
/// length when it was longer: what an error line may show of it.
pub(crate) fn excerpt(value: &str) -> String {
    if value.len() <= MAX_QUOTED_BYTES {
        return value.to_string();
    }
    let mut end = MAX_QUOTED_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &value[..end], value.len())
}

/// `value` quoted (escapes as Rust's debug format writes them), cut as [`excerpt`] cuts.
pub(crate) fn quoted(value: &str) -> String {
    if value.len() <= MAX_QUOTED_BYTES {
        return format!("{value:?}");
    }
    let mut end = MAX_QUOTED_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &value[..end], value.len())
}

fn env_name(flag: &str) -> String {
    format!("A8_{}", flag.to_ascii_uppercase())
}

/// A server option's bad value: `invalid value "x" for --flag (A8_FLAG): why`.
fn invalid(name: &str, value: &str, why: &str) -> ConfigError {
    SERVER.invalid(name, value, why)
}

/// A server configuration error with this message.
fn error(message: String) -> ConfigError {
    SERVER.error(message)
}

/// The server's `--help` text: every option with its env name and default.
pub fn help_text() -> String {
    SERVER.help()
}

/// Rewrites Go-style arguments into the form pico-args reads: `-name` becomes `--name`, and a
/// boolean flag given alone becomes `--name=true`.
fn normalise_args(args: Vec<OsString>, options: &[OptionSpec]) -> Vec<OsString> {
    args.into_iter()
        .map(|arg| {
            let Some(text) = arg.to_str() else { return arg };
            let mut text = text.to_string();
            // Only a known option written with one dash is rewritten: a value such as a secret
            // `-abc` or a capacity `-10` stays as it is.
            let single_dash_name = text
                .strip_prefix('-')
                .filter(|rest| !rest.starts_with('-'))
                .map(|rest| rest.split('=').next().unwrap_or(rest));
            if single_dash_name.is_some_and(|name| options.iter().any(|o| o.name == name)) {
                text.insert(0, '-');
            }
            if let Some(flag) = text.strip_prefix("--") {
                if !flag.contains('=')
                    && options
                        .iter()
                        .any(|o| o.name == flag && o.kind == Kind::Bool)
                {
                    text.push_str("=true");
                }
            }
            OsString::from(text)
        })
        .collect()
}

/// Parses the command line (without the program name) and the environment.
pub fn parse(
    mut args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, ConfigError> {
    // A subcommand is the first argument; each has its own table.
    match args.first().and_then(|a| a.to_str()) {
        Some("token") => parse_token(args.split_off(1)),
        Some("sidecar") => parse_sidecar(args.split_off(1), env),
        _ => parse_server(args, env),
    }
}

fn parse_server(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, ConfigError> {
    let mut raw = RawValues::new(&SERVER, args, env);
    if raw.pargs.contains(["-h", "--help"]) {
        return Ok(Command::Help(SERVER.help()));
    }
    if raw.pargs.contains(["-v", "--version"]) {
        return Ok(Command::Version);
    }
    let config = build(&mut raw)?;
    raw.finish()?;
    Ok(Command::Serve {
        config: Box::new(config),
        summary: raw.summary(),
    })
}

fn parse_token(args: Vec<OsString>) -> Result<Command, ConfigError> {
    let no_env = |_: &str| None;
    let mut raw = RawValues::new(&TOKEN, args, &no_env);
    if raw.pargs.contains(["-h", "--help"]) {
        return Ok(Command::Help(TOKEN.help()));
    }
    let secret = raw.secret("secret")?;
    if !secret.is_set() {
        return Err(TOKEN.error(format!("{} is required", TOKEN.flag("secret"))));
    }
    let namespace = raw.text("namespace")?;
    if namespace.is_empty() {
        return Err(TOKEN.error(format!("{} is required", TOKEN.flag("namespace"))));
    }
    let namespace = Namespace::new(&namespace)
        .map_err(|why| TOKEN.invalid("namespace", &namespace, &why.to_string()))?;
    let ttl = match raw.single("ttl")? {
        None => None,
        Some(value) => match parse_duration(&value) {
            Ok(ttl) if ttl > Duration::ZERO => Some(ttl),
            Ok(_) => return Err(TOKEN.invalid("ttl", &value, "must be > 0")),
            Err(why) => return Err(TOKEN.invalid("ttl", &value, why)),
        },
    };
    raw.finish()?;
    Ok(Command::Token {
        secret,
        namespace,
        ttl,
    })
}

/// Splits the sidecar's arguments where the supervised command begins: at `--` (dropped) or at
/// the first argument that is neither an option nor the value of the option before it.
fn split_sidecar_command(args: Vec<OsString>) -> (Vec<OsString>, Vec<OsString>) {
    let mut options = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str().map(str::to_string) else {
            return (options, std::iter::once(arg).chain(args).collect());
        };
        if text == "--" {
            return (options, args.collect());
        }
        if !text.starts_with('-') || text == "-" {
            return (options, std::iter::once(arg).chain(args).collect());
        }
        let name = text.trim_start_matches('-');
        let takes_value = !name.contains('=')
            && SIDECAR_OPTIONS
                .iter()
                .any(|o| o.name == name && o.kind != Kind::Bool);
        options.push(arg);
        if takes_value {
            if let Some(value) = args.next() {
                options.push(value);
            }
        }
    }
    (options, Vec::new())
}

fn parse_sidecar(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, ConfigError> {
    let (options, command) = split_sidecar_command(args);
    let mut raw = RawValues::new(&SIDECAR, options, env);
    if raw.pargs.contains(["-h", "--help"]) {
        return Ok(Command::Help(SIDECAR.help()));
    }
    if raw.pargs.contains(["-v", "--version"]) {
        return Ok(Command::Version);
    }
    let mut given = crate::sidecar::Given::default();
    for option in SIDECAR_OPTIONS {
        if option.kind == Kind::List {
            if let Some(items) = raw.list(option.name)? {
                given.set_list(option.name, items);
            }
            continue;
        }
        let Some(value) = raw.single(option.name)? else {
            continue;
        };
        // Every value is checked for its type here, those of ignored options too (§2.3).
        let why = match option.kind {
            Kind::Int => parse_int(&value).err(),
            Kind::Bool => parse_bool(&value).map_or(
                Some("a boolean is one of 1 t T TRUE true True 0 f F FALSE false False"),
                |_| None,
            ),
            Kind::Duration => parse_duration(&value).err(),
            Kind::Text | Kind::List | Kind::Ip => None,
        };
        if let Some(why) = why {
            return Err(SIDECAR.invalid(option.name, &value, why));
        }
        given.set(option.name, value);
    }
    raw.finish()?;
    given.command = command;
    let config = crate::sidecar::resolve(&given)?;
    Ok(Command::Sidecar(Box::new(config)))
}

/// Raw option values of one command, before conversion: a flag wins over its env twin. Every
/// value read is also recorded, as text, for the summary; a secret only as `(set)`/`(unset)`.
struct RawValues<'a> {
    command: &'static CommandSpec,
    pargs: pico_args::Arguments,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// (option, effective value as shown), in the order read; secrets already masked.
    effective: Vec<(&'static str, String)>,
}

impl<'a> RawValues<'a> {
    fn new(
        command: &'static CommandSpec,
        args: Vec<OsString>,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> RawValues<'a> {
        RawValues {
            command,
            pargs: pico_args::Arguments::from_vec(normalise_args(args, command.options)),
            env,
            effective: Vec::new(),
        }
    }

    /// Remembers what `name` is in effect as; a secret is masked here, whoever calls.
    fn record(&mut self, name: &'static str, value: &str) {
        let shown = if self.command.spec(name).secret {
            Secret::mask(value).to_string()
        } else if name == "store_address" {
            crate::store::redis::settings::without_passwords(value)
        } else {
            value.to_string()
        };
        self.effective.retain(|(n, _)| *n != name);
        self.effective.push((name, shown));
    }

    /// The value in effect for an option whose default is computed (`workers`), for the summary.
    fn resolved(&mut self, name: &'static str, value: &dyn fmt::Display) {
        self.record(name, &value.to_string());
    }

    fn env_value(&self, name: &str) -> Option<String> {
        if self.command.env_twins {
            (self.env)(&env_name(name))
        } else {
            None
        }
    }

    fn flag_values(&mut self, name: &'static str) -> Result<Vec<String>, ConfigError> {
        let key = leak_flag(name);
        self.pargs.values_from_str(key).map_err(|e| {
            self.command
                .error(format!("{}: {e}", self.command.flag(name)))
        })
    }

    /// The flag's value, else the env var's, else `None`.
    fn single(&mut self, name: &'static str) -> Result<Option<String>, ConfigError> {
        // Go's flag package lets the last occurrence win.
        let value = match self.flag_values(name)?.into_iter().last() {
            Some(last) => Some(last),
            None => self.env_value(name),
        };
        if let Some(value) = &value {
            self.record(name, value);
        }
        Ok(value)
    }

    /// Env values (comma-separated, trimmed) followed by every flag occurrence, as urfave/cli v1
    /// combined them.
    fn list(&mut self, name: &'static str) -> Result<Option<Vec<String>>, ConfigError> {
        let flags = self.flag_values(name)?;
        let env = self.env_value(name);
        if env.is_none() && flags.is_empty() {
            return Ok(None);
        }
        let mut all: Vec<String> = match env {
            Some(v) => v.split(',').map(|s| s.trim().to_string()).collect(),
            None => Vec::new(),
        };
        all.extend(flags);
        self.record(name, &all.join(","));
        Ok(Some(all))
    }

    fn text(&mut self, name: &'static str) -> Result<String, ConfigError> {
        Ok(self
            .single(name)?
            .unwrap_or_else(|| self.command.spec(name).default.to_string()))
    }

    /// An option marked `secret`, wrapped so that it cannot be printed.
    fn secret(&mut self, name: &'static str) -> Result<Secret, ConfigError> {
        debug_assert!(self.command.spec(name).secret, "--{name} is not a secret");
        self.text(name).map(Secret)
    }

    fn int(&mut self, name: &'static str) -> Result<i64, ConfigError> {
        let value = self.text(name)?;
        parse_int(&value).map_err(|why| self.command.invalid(name, &value, why))
    }

    fn port(&mut self, name: &'static str) -> Result<u16, ConfigError> {
        let value = self.text(name)?;
        let n = parse_int(&value).map_err(|why| self.command.invalid(name, &value, why))?;
        u16::try_from(n).map_err(|_| {
            self.command
                .invalid(name, &value, "a port must be within 0..65535")
        })
    }

    fn bool(&mut self, name: &'static str) -> Result<bool, ConfigError> {
        let value = self.text(name)?;
        parse_bool(&value).ok_or_else(|| {
            self.command.invalid(
                name,
                &value,
                "a boolean is one of 1 t T TRUE true True 0 f F FALSE false False",
            )
        })
    }

    fn duration(&mut self, name: &'static str) -> Result<Duration, ConfigError> {
        let value = self.text(name)?;
        parse_duration(&value).map_err(|why| self.command.invalid(name, &value, why))
    }

    /// Refuses whatever is left on the command line.
    fn finish(&mut self) -> Result<(), ConfigError> {
        let rest =
            std::mem::replace(&mut self.pargs, pico_args::Arguments::from_vec(Vec::new())).finish();
        match rest.first() {
            None => Ok(()),
            Some(extra) => Err(self.command.error(format!(
                "unknown argument {} (see {} --help)",
                quoted(&extra.to_string_lossy()),
                self.command.name
            ))),
        }
    }

    /// Every option of the table, in table order, as `name=value`: the value read (flag or
    /// environment), else the default. Secrets were masked when they were recorded, and an
    /// option never read shows its default, masked too if it is a secret.
    fn summary(&self) -> String {
        let mut out = String::new();
        for option in self.command.options {
            let value = match self.effective.iter().find(|(n, _)| *n == option.name) {
                Some((_, shown)) => shown.clone(),
                None if option.secret => Secret::mask(option.default).to_string(),
                None => option.default.to_string(),
            };
            if !out.is_empty() {
                out.push(' ');
            }
            let plain = !value.is_empty()
                && !value
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=');
            if plain {
                out.push_str(&format!("{}={value}", option.name));
            } else {
                out.push_str(&format!("{}={value:?}", option.name));
            }
        }
        out
    }
}

/// pico-args wants `&'static str` keys; the option names are static, their `--` forms are built once.
fn leak_flag(name: &'static str) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static FLAGS: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let mut flags = FLAGS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    flags
        .entry(name)
        .or_insert_with(|| Box::leak(format!("--{name}").into_boxed_str()))
}

fn build(raw: &mut RawValues<'_>) -> Result<Config, ConfigError> {
    let api_bind = {
        let value = raw.text("api_bind")?;
        value
            .parse::<IpAddr>()
            .map_err(|_| invalid("api_bind", &value, "an IP address literal is required"))?
    };
    let api_port = raw.port("api_port")?;
    let workers = match raw.single("workers")? {
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(value) => match parse_int(&value) {
            Ok(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX).min(1024),
            Ok(_) => return Err(invalid("workers", &value, "must be >= 1")),
            Err(why) => return Err(invalid("workers", &value, why)),
        },
    };
    raw.resolved("workers", &workers);
    let max_body_size = {
        let n = raw.int("max_body_size")?;
        if !(1..=MAX_BODY_SIZE_LIMIT).contains(&n) {
            return Err(invalid(
                "max_body_size",
                &n.to_string(),
                "must be within 1..1073741824 (1 GiB)",
            ));
        }
        usize::try_from(n).unwrap_or(usize::MAX)
    };
    let idle_timeout = raw.duration("idle_timeout")?;
    if idle_timeout.is_zero() {
        return Err(invalid("idle_timeout", "0", "must be > 0"));
    }
    let request_timeout = raw.duration("request_timeout")?;
    if request_timeout.is_zero() {
        return Err(invalid("request_timeout", "0", "must be > 0"));
    }
    let max_connections = {
        let n = raw.int("max_connections")?;
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&n) {
            return Err(invalid(
                "max_connections",
                &n.to_string(),
                "must be within 1..1000000",
            ));
        }
        usize::try_from(n).unwrap_or(usize::MAX)
    };
    let max_body_memory = {
        let n = raw.int("max_body_memory")?;
        if n < 1 || usize::try_from(n).is_err() {
            return Err(invalid("max_body_memory", &n.to_string(), "must be >= 1"));
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n < max_body_size {
            return Err(error(format!(
                "--max_body_memory ({}) {n} is smaller than --max_body_size ({}) {max_body_size}: \
                 no body that large could be read",
                env_name("max_body_memory"),
                env_name("max_body_size")
            )));
        }
        n
    };
    let log_level = {
        let value = raw.text("log_level")?;
        match value.as_str() {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "fatal" => LogLevel::Fatal,
            "panic" => LogLevel::Panic,
            _ => {
                return Err(invalid(
                    "log_level",
                    &value,
                    "one of debug, info, warn, warning, error, fatal, panic (lowercase)",
                ))
            }
        }
    };
    let log_format = {
        let value = raw.text("log_format")?;
        match value.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            "logstash" => LogFormat::Logstash,
            _ => return Err(invalid("log_format", &value, "one of text, json, logstash")),
        }
    };
    let mut auth_modes = Vec::new();
    for mode in raw.list("auth_mode")?.unwrap_or_default() {
        auth_modes.push(match mode.as_str() {
            "trusted" => AuthMode::Trusted,
            "jwt" => AuthMode::Jwt,
            _ => return Err(invalid("auth_mode", &mode, "one of trusted, jwt")),
        });
    }
    let jwt_secret = raw.secret("jwt_secret")?;
    if auth_modes.contains(&AuthMode::Jwt) && !jwt_secret.is_set() {
        return Err(error(format!(
            "--jwt_secret ({}) is required when --auth_mode includes jwt",
            env_name("jwt_secret")
        )));
    }
    let require_https = raw.bool("require_https")?;
    let namespace_capacity = usize::try_from(raw.int("namespace_capacity")?).ok();
    let default_ttl = raw.duration("default_ttl")?;
    let min_ttl = raw.duration("min_ttl")?;
    let max_ttl = raw.duration("max_ttl")?;
    if min_ttl > max_ttl {
        return Err(error(format!(
            "--min_ttl ({}) {:?} is larger than --max_ttl ({}) {:?}",
            env_name("min_ttl"),
            min_ttl,
            env_name("max_ttl"),
            max_ttl
        )));
    }
    if default_ttl < min_ttl || default_ttl > max_ttl {
        return Err(error(format!(
            "--default_ttl ({}) {:?} is outside [--min_ttl, --max_ttl] = [{:?}, {:?}]",
            env_name("default_ttl"),
            default_ttl,
            min_ttl,
            max_ttl
        )));
    }
    let store = {
        let value = raw.text("store")?;
        match value.as_str() {
            "inmem" => StoreKind::Memory,
            "redis" => StoreKind::Redis,
            _ => return Err(invalid("store", &value, "one of inmem, redis")),
        }
    };
    let store_address = raw.text("store_address")?;
    let store_password = raw.secret("store_password")?;
    let store_sentinel = raw.text("store_sentinel")?;
    let store_cluster = raw.bool("store_cluster")?;
    let redis = if store == StoreKind::Redis {
        use crate::store::redis::settings::{parse, Culprit};
        let parsed = parse(
            &store_address,
            store_password.expose(),
            &store_sentinel,
            store_cluster,
        );
        match parsed {
            Ok(settings) => Some(settings),
            Err((culprit, why)) => {
                let name = match culprit {
                    Culprit::Address => "store_address",
                    Culprit::Sentinel => "store_sentinel",
                };
                return Err(error(format!("--{name} ({}) {why}", env_name(name))));
            }
        }
    } else {
        for (name, given) in [
            ("store_sentinel", !store_sentinel.is_empty()),
            ("store_cluster", store_cluster),
        ] {
            if given {
                return Err(error(format!(
                    "--{name} ({}) works only with --store redis",
                    env_name(name)
                )));
            }
        }
        None
    };
    let replication = raw.bool("replication")?;
    let replication_port = raw.port("replication_port")?;
    let sync_timeout = raw.duration("sync_timeout")?;
    let cluster_dir_given = raw.single("cluster_dir")?;
    let cluster_dir = cluster_dir_given
        .clone()
        .unwrap_or_else(|| SERVER.spec("cluster_dir").default.to_string());
    let cluster_size = raw.int("cluster_size")?;
    let cluster = cluster_options(
        raw,
        ClusterInputs {
            api_bind,
            replication,
            replication_port,
            sync_timeout,
            cluster_dir_given,
            cluster_size,
        },
    )?;
    if replication && store == StoreKind::Redis {
        return Err(error(format!(
            "--replication ({}) works only with --store inmem, not --store redis",
            env_name("replication")
        )));
    }
    let mut warnings = Vec::new();
    let kubernetes = kubernetes_options(raw, &mut warnings)?;
    let eureka_urls: Vec<String> = raw
        .list("eureka_url")?
        .unwrap_or_default()
        .into_iter()
        .filter(|u| !u.is_empty())
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    for url in &eureka_urls {
        if let Err(why) = check_base_url(url) {
            return Err(invalid("eureka_url", url, why));
        }
    }
    // The options of a source that is not enabled are accepted and ignored (catalogs §1).
    let catalog_poll = if eureka_urls.is_empty() {
        raw.duration("catalog_poll").unwrap_or(MIN_CATALOG_POLL)
    } else {
        raw.duration("catalog_poll")?
    };
    if !eureka_urls.is_empty() && catalog_poll < MIN_CATALOG_POLL {
        return Err(invalid(
            "catalog_poll",
            &format_go_duration(catalog_poll),
            "must be >= 1s",
        ));
    }
    let fs_catalog = raw.text("fs_catalog")?;
    if !fs_catalog.is_empty() && !std::path::Path::new(&fs_catalog).is_dir() {
        return Err(invalid(
            "fs_catalog",
            &fs_catalog,
            "not an existing directory",
        ));
    }

    let config = Config {
        api_bind,
        api_port,
        workers,
        max_body_size,
        idle_timeout,
        request_timeout,
        max_connections,
        max_body_memory,
        log_level,
        log_format,
        auth_modes,
        jwt_secret,
        require_https,
        namespace_capacity,
        default_ttl,
        min_ttl,
        max_ttl,
        store,
        store_address,
        store_password,
        redis,
        replication,
        replication_port,
        sync_timeout,
        cluster_dir,
        cluster_size,
        cluster,
        kubernetes,
        warnings,
        eureka_urls,
        catalog_poll,
        fs_catalog,
    };
    Ok(config)
}

/// Where a pod's service account is mounted (`--k8s_url in-cluster`).
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const SERVICE_ACCOUNT_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// Largest token or CA file read at startup.
const MAX_K8S_FILE_BYTES: u64 = 1 << 20;
/// The shortest `--k8s_idle_timeout`.
const MIN_K8S_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// A small file read whole, at most [`MAX_K8S_FILE_BYTES`].
fn read_small_file(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_K8S_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_K8S_FILE_BYTES {
        return Err(std::io::Error::other("larger than 1 MiB"));
    }
    Ok(bytes)
}

/// Reads and checks the Kubernetes catalog's options (catalogs contract §1, §3.1); `None` when
/// `--k8s_url` is empty (the others are then accepted and ignored, as the contract says).
fn kubernetes_options(
    raw: &mut RawValues,
    warnings: &mut Vec<String>,
) -> Result<Option<crate::catalogs::kubernetes::Settings>, ConfigError> {
    use crate::catalogs::kubernetes::{Settings, TokenSource};
    let url = raw.text("k8s_url")?;
    if url.is_empty() {
        for name in [
            "k8s_token",
            "k8s_token_file",
            "k8s_ca_file",
            "k8s_max_namespaces",
            "k8s_idle_timeout",
        ] {
            // Taken, so not an unknown argument; whatever they say is ignored.
            let _ = raw.text(name);
        }
        return Ok(None);
    }
    let token = raw.secret("k8s_token")?;
    let token_file = raw.text("k8s_token_file")?;
    let ca_file = raw.text("k8s_ca_file")?;
    let max_namespaces = raw.int("k8s_max_namespaces")?;
    if max_namespaces < 1 {
        return Err(invalid(
            "k8s_max_namespaces",
            &max_namespaces.to_string(),
            "must be 1 or more",
        ));
    }
    let idle_timeout = raw.duration("k8s_idle_timeout")?;
    if idle_timeout < MIN_K8S_IDLE_TIMEOUT {
        return Err(invalid(
            "k8s_idle_timeout",
            &format_go_duration(idle_timeout),
            "must be >= 1s",
        ));
    }
    if token.is_set() && !token_file.is_empty() {
        return Err(error(format!(
            "--k8s_token ({}) and --k8s_token_file ({}) exclude each other",
            env_name("k8s_token"),
            env_name("k8s_token_file")
        )));
    }
    let in_cluster = url == "in-cluster";
    let (base_url, default_token_file, default_ca_file) = if in_cluster {
        let variable = |name: &str| (raw.env)(name).filter(|v| !v.is_empty());
        let (Some(host), Some(port)) = (
            variable("KUBERNETES_SERVICE_HOST"),
            variable("KUBERNETES_SERVICE_PORT"),
        ) else {
            return Err(invalid(
                "k8s_url",
                &url,
                "in-cluster needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT",
            ));
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        (
            format!("https://{host}:{port}"),
            SERVICE_ACCOUNT_TOKEN,
            SERVICE_ACCOUNT_CA,
        )
    } else {
        let trimmed = url.trim_end_matches('/').to_string();
        check_base_url(&trimmed).map_err(|why| invalid("k8s_url", &url, why))?;
        (trimmed, "", "")
    };
    check_base_url(&base_url).map_err(|why| invalid("k8s_url", &url, why))?;
    // A file that the in-cluster defaults name is the URL's error; a given one is its option's.
    let option_of = |given: &str, option: &'static str| {
        if given.is_empty() {
            "k8s_url"
        } else {
            option
        }
    };
    let token = if token.is_set() {
        TokenSource::Value(token)
    } else {
        let path = if token_file.is_empty() {
            default_token_file.to_string()
        } else {
            token_file.clone()
        };
        if path.is_empty() {
            TokenSource::None
        } else {
            let option = option_of(&token_file, "k8s_token_file");
            let text = read_small_file(&path)
                .map_err(|e| invalid(option, &path, &format!("cannot read the token: {e}")))?;
            if String::from_utf8_lossy(&text).trim().is_empty() {
                return Err(invalid(option, &path, "the token file is empty"));
            }
            TokenSource::File(path.into())
        }
    };
    let ca_path = if ca_file.is_empty() {
        default_ca_file.to_string()
    } else {
        ca_file.clone()
    };
    let ca = if ca_path.is_empty() {
        None
    } else {
        let option = option_of(&ca_file, "k8s_ca_file");
        let pem = read_small_file(&ca_path)
            .map_err(|e| invalid(option, &ca_path, &format!("cannot read the CA file: {e}")))?;
        let certificates: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .collect();
        if certificates.is_empty() {
            return Err(invalid(option, &ca_path, "holds no PEM certificate"));
        }
        if base_url.starts_with("http://") {
            warnings.push(format!(
                "--k8s_ca_file ({}) is unused with an http:// --k8s_url",
                env_name("k8s_ca_file")
            ));
        }
        Some(certificates)
    };
    Ok(Some(Settings {
        base_url,
        token,
        ca,
        max_namespaces: usize::try_from(max_namespaces).unwrap_or(usize::MAX),
        idle_timeout,
    }))
}

/// The shortest `--catalog_poll`.
const MIN_CATALOG_POLL: Duration = Duration::from_secs(1);

/// Checks a catalog base URL: absolute `http://` or `https://`, a host, an optional port and
/// path, no query, fragment or credentials.
fn check_base_url(url: &str) -> Result<(), &'static str> {
    const WHY: &str =
        "must be an absolute http:// or https:// URL with a host, without query or fragment";
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or(WHY)?;
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']').ok_or(WHY)?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(WHY)?),
            };
            (host, port)
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(WHY);
    }
    if host.is_empty()
        || url.contains('?')
        || url.contains('#')
        || authority.contains('@')
        || url.bytes().any(|b| b <= b' ' || b == 0x7f)
    {
        return Err(WHY);
    }
    Ok(())
}

/// The cluster options already read, for [`cluster_options`].
struct ClusterInputs {
    api_bind: IpAddr,
    replication: bool,
    replication_port: u16,
    sync_timeout: Duration,
    cluster_dir_given: Option<String>,
    cluster_size: i64,
}

/// Reads and checks the replication options (cluster contract §1.2); their syntax is checked
/// with or without `--replication`.
fn cluster_options(
    raw: &mut RawValues,
    inputs: ClusterInputs,
) -> Result<crate::cluster::ClusterConfig, ConfigError> {
    use crate::cluster::address::{split_list, HostPort};
    let bind = match raw.single("replication_bind")? {
        Some(text) => text.trim().parse::<IpAddr>().map_err(|_| {
            invalid(
                "replication_bind",
                &text,
                "not an IP literal, e.g. 0.0.0.0, ::, 127.0.0.1",
            )
        })?,
        None => inputs.api_bind,
    };
    let advertised = match raw.text("replication_address")?.as_str() {
        "" => None,
        text => {
            Some(HostPort::parse(text).map_err(|why| invalid("replication_address", text, why))?)
        }
    };
    let secret = raw.secret("replication_secret")?;
    let mut peers = Vec::new();
    for entry in split_list(&raw.list("peers")?.unwrap_or_default()) {
        peers.push(HostPort::parse(&entry).map_err(|why| invalid("peers", &entry, why))?);
    }
    if inputs.replication && inputs.replication_port == 0 {
        return Err(invalid(
            "replication_port",
            "0",
            "a port must be within 1..65535 with --replication",
        ));
    }
    if inputs.cluster_size < 0 {
        return Err(invalid(
            "cluster_size",
            &inputs.cluster_size.to_string(),
            "must be 0 or more",
        ));
    }
    let dir = match inputs.cluster_dir_given {
        Some(given) if given.is_empty() => None,
        Some(given) => Some(std::path::PathBuf::from(given)),
        None if peers.is_empty() => {
            Some(std::path::PathBuf::from(SERVER.spec("cluster_dir").default))
        }
        None => None,
    };
    Ok(crate::cluster::ClusterConfig {
        bind,
        port: inputs.replication_port,
        advertised,
        secret,
        peers,
        dir,
        size: inputs.cluster_size,
        sync_timeout: inputs.sync_timeout,
    })
}

/// Parses an integer the way Go's `strconv.ParseInt(s, 0, 64)` does: optional sign, then `0x`,
/// `0o`, `0b` or a leading `0` (octal) prefix, `_` separators allowed only after a prefix.
pub fn parse_int(text: &str) -> Result<i64, &'static str> {
    const NOT_AN_INTEGER: &str = "not an integer";
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_string(), true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_string(), true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_string(), true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string(), true)
    } else {
        (10, lower.clone(), false)
    };
    if digits.contains('_') {
        // Go allows underscores only with a base prefix, and only between digits (the prefix
        // counts as one).
        if !prefixed || digits.ends_with('_') || digits.contains("__") {
            return Err(NOT_AN_INTEGER);
        }
    }
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(NOT_AN_INTEGER);
    }
    let magnitude = i128::from_str_radix(&digits, radix).map_err(|_| "integer out of range")?;
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).map_err(|_| "integer out of range")
}

/// Parses a boolean as Go's `strconv.ParseBool` does; the empty string (an env var set empty) is false.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "" | "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        _ => None,
    }
}

/// Parses a Go duration (`30s`, `1m30s`, `1.5h`, `250ms`, `0`). Negative durations are refused:
/// no option of the registry has a meaning for them.
pub fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    const BAD: &str = "a duration is a number with a unit (ns, us, ms, s, m, h), e.g. 30s or 1m30s";
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(BAD);
    }
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(BAD);
        }
        let value: f64 = number.parse().map_err(|_| BAD)?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err("a duration needs a unit, e.g. 30s"),
            _ => return Err(BAD),
        };
        rest = &rest[unit_len..];
        total_nanos += value * unit_nanos;
    }
    if total_nanos > i64::MAX as f64 {
        return Err("duration out of range");
    }
    if negative && total_nanos > 0.0 {
        return Err("a negative duration is not allowed here");
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Renders a duration as Go does (`1m30s`, `250ms`, `7m51.693769606s`), for `/uptime`.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let seconds_nanos = nanos % 60_000_000_000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", trim_fraction(seconds_nanos, 1_000_000_000)));
    out
}

fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        parse_serve(args, &lookup).map(|(config, _)| config)
    }

    /// The configuration and the startup summary.
    fn parse_serve(
        args: &[&str],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Config, String), ConfigError> {
        match parse(args.iter().map(OsString::from).collect(), env)? {
            Command::Serve { config, summary } => Ok((*config, summary)),
            _ => panic!("expected a serve command"),
        }
    }

    fn parse_token_with(
        args: &[&str],
    ) -> Result<(Secret, Namespace, Option<Duration>), ConfigError> {
        let mut all = vec!["token"];
        all.extend_from_slice(args);
        // The environment is never read for `token`: this one would change every value.
        let env = |name: &str| match name {
            "A8_TTL" => Some("1s".to_string()),
            "A8_NAMESPACE" | "A8_SECRET" => Some("from-env".to_string()),
            _ => None,
        };
        match parse(all.into_iter().map(OsString::from).collect(), &env)? {
            Command::Token {
                secret,
                namespace,
                ttl,
            } => Ok((secret, namespace, ttl)),
            _ => panic!("expected a token command"),
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = parse_with(&[], &[]).unwrap();
        assert_eq!(c.api_port, 8080);
        assert_eq!(c.default_ttl, Duration::from_secs(30));
        assert_eq!(c.min_ttl, Duration::from_secs(10));
        assert_eq!(c.max_ttl, Duration::from_secs(600));
        assert_eq!(c.max_body_size, 1_048_576);
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections, 16_384);
        assert_eq!(c.max_body_memory, 64 << 20);
        assert_eq!(c.namespace_capacity, None);
        assert!(c.auth_modes.is_empty());
        assert!(c.workers >= 1);
    }

    #[test]
    fn flag_wins_over_env_in_every_spelling() {
        let env = [("A8_API_PORT", "9000")];
        assert_eq!(parse_with(&[], &env).unwrap().api_port, 9000);
        for args in [
            &["--api_port", "7000"][..],
            &["--api_port=7000"],
            &["-api_port", "7000"],
            &["-api_port=7000"],
        ] {
            assert_eq!(parse_with(args, &env).unwrap().api_port, 7000, "{args:?}");
        }
    }

    #[test]
    fn values_that_start_with_a_dash_are_values() {
        let c = parse_with(&["--jwt_secret", "-abc", "--auth_mode", "jwt"], &[]).unwrap();
        assert_eq!(c.jwt_secret.expose(), "-abc");
        let c = parse_with(&["-namespace_capacity", "-10"], &[]).unwrap();
        assert_eq!(c.namespace_capacity, None);
        let c = parse_with(&["-jwt_secret=-x"], &[]).unwrap();
        assert_eq!(c.jwt_secret.expose(), "-x");
    }

    #[test]
    fn boolean_flag_alone_means_true() {
        assert!(parse_with(&["--require_https"], &[]).unwrap().require_https);
        assert!(
            !parse_with(&["--require_https=false"], &[])
                .unwrap()
                .require_https
        );
        assert!(
            !parse_with(&[], &[("A8_REQUIRE_HTTPS", "")])
                .unwrap()
                .require_https
        );
        let err = parse_with(&[], &[("A8_REQUIRE_HTTPS", "yes")]).unwrap_err();
        assert!(err
            .to_string()
            .contains("--require_https (A8_REQUIRE_HTTPS)"));
    }

    #[test]
    fn auth_modes_combine_env_then_flags() {
        let c = parse_with(
            &["--auth_mode", "trusted", "--jwt_secret", "s"],
            &[("A8_AUTH_MODE", "jwt, trusted")],
        )
        .unwrap();
        assert_eq!(
            c.auth_modes,
            vec![AuthMode::Jwt, AuthMode::Trusted, AuthMode::Trusted]
        );
        let err = parse_with(&[], &[("A8_AUTH_MODE", "")]).unwrap_err();
        assert!(
            err.to_string().contains("--auth_mode (A8_AUTH_MODE)"),
            "{err}"
        );
        let err = parse_with(&[], &[("A8_AUTH_MODE", "jwt")]).unwrap_err();
        assert!(
            err.to_string().contains("--jwt_secret (A8_JWT_SECRET)"),
            "{err}"
        );
    }

    #[test]
    fn ttl_relations_are_validated() {
        let err = parse_with(&[], &[("A8_MIN_TTL", "60s"), ("A8_MAX_TTL", "30s")]).unwrap_err();
        assert!(err.to_string().contains("--min_ttl"), "{err}");
        let err = parse_with(&["--default_ttl", "5s"], &[]).unwrap_err();
        assert!(
            err.to_string().contains("--default_ttl (A8_DEFAULT_TTL)"),
            "{err}"
        );
        let err = parse_with(&[], &[("A8_DEFAULT_TTL", "30")]).unwrap_err();
        assert!(err.to_string().contains("needs a unit"), "{err}");
    }

    #[test]
    fn bad_values_name_flag_and_env() {
        for (env, flag) in [
            (("A8_API_PORT", "abc"), "--api_port (A8_API_PORT)"),
            (("A8_API_PORT", "70000"), "--api_port (A8_API_PORT)"),
            (("A8_LOG_LEVEL", "INFO"), "--log_level (A8_LOG_LEVEL)"),
            (("A8_LOG_FORMAT", "xml"), "--log_format (A8_LOG_FORMAT)"),
            (("A8_STORE", "bogus"), "--store (A8_STORE)"),
            (("A8_STORE", "redis"), "--store_address (A8_STORE_ADDRESS)"),
            (("A8_WORKERS", "0"), "--workers (A8_WORKERS)"),
            (
                ("A8_MAX_BODY_SIZE", "0"),
                "--max_body_size (A8_MAX_BODY_SIZE)",
            ),
            (
                ("A8_IDLE_TIMEOUT", "0s"),
                "--idle_timeout (A8_IDLE_TIMEOUT)",
            ),
            (
                ("A8_MAX_BODY_SIZE", "1073741825"),
                "--max_body_size (A8_MAX_BODY_SIZE)",
            ),
            (
                ("A8_REQUEST_TIMEOUT", "0"),
                "--request_timeout (A8_REQUEST_TIMEOUT)",
            ),
            (
                ("A8_MAX_CONNECTIONS", "0"),
                "--max_connections (A8_MAX_CONNECTIONS)",
            ),
            (
                ("A8_MAX_BODY_MEMORY", "1000"),
                "--max_body_memory (A8_MAX_BODY_MEMORY)",
            ),
            (("A8_API_BIND", "localhost"), "--api_bind (A8_API_BIND)"),
        ] {
            let err = parse_with(&[], &[env]).unwrap_err().to_string();
            assert!(err.contains(flag), "{env:?}: {err}");
            assert_eq!(err.lines().count(), 1);
        }
    }

    #[test]
    fn the_redis_store_is_configured() {
        let config = parse_with(&[], &[("A8_STORE", "redis"), ("A8_STORE_ADDRESS", "h:1")]);
        let redis = config.unwrap().redis.expect("the Redis store's settings");
        assert_eq!(redis.shown(), "h:1");
    }

    #[test]
    fn eureka_urls_are_absolute_http_urls() {
        let config = parse_with(
            &[],
            &[(
                "A8_EUREKA_URL",
                "http://a:8761/eureka/v2/,https://[::1]:8443/e",
            )],
        )
        .unwrap();
        assert_eq!(
            config.eureka_urls,
            ["http://a:8761/eureka/v2", "https://[::1]:8443/e"]
        );
        assert_eq!(config.catalog_poll, Duration::from_secs(30));
        for bad in [
            "ftp://a",
            "a:8761",
            "http://",
            "http://a?x=1",
            "http://a#f",
            "http://a:x/",
        ] {
            let err = parse_with(&[], &[("A8_EUREKA_URL", bad)]).unwrap_err();
            assert!(
                err.to_string().contains("--eureka_url (A8_EUREKA_URL)"),
                "{bad}: {err}"
            );
        }
        let eureka = ("A8_EUREKA_URL", "http://eureka:8761/eureka/v2");
        let err = parse_with(&[], &[eureka, ("A8_CATALOG_POLL", "500ms")]).unwrap_err();
        assert!(err.to_string().contains("--catalog_poll"), "{err}");
        // The options of a source that is not enabled are accepted and ignored.
        for (name, value) in [
            ("A8_CATALOG_POLL", "500ms"),
            ("A8_CATALOG_POLL", "soon"),
            ("A8_K8S_MAX_NAMESPACES", "0"),
            ("A8_K8S_IDLE_TIMEOUT", "500ms"),
            ("A8_K8S_TOKEN_FILE", "/nonexistent/token"),
        ] {
            assert!(parse_with(&[], &[(name, value)]).is_ok(), "{name}={value}");
        }
    }

    #[test]
    fn the_file_catalog_needs_an_existing_directory() {
        let err = parse_with(&[], &[("A8_FS_CATALOG", "/nonexistent/catalog")]).unwrap_err();
        assert!(
            err.to_string().contains("--fs_catalog (A8_FS_CATALOG)"),
            "{err}"
        );
        let dir = std::env::temp_dir();
        let config = parse_with(&[], &[("A8_FS_CATALOG", dir.to_str().unwrap())]);
        assert!(config.is_ok());
    }

    #[test]
    fn negative_capacity_is_unlimited() {
        let c = parse_with(&[], &[("A8_NAMESPACE_CAPACITY", "-5")]).unwrap();
        assert_eq!(c.namespace_capacity, None);
        let c = parse_with(&["--namespace_capacity", "0x10"], &[]).unwrap();
        assert_eq!(c.namespace_capacity, Some(16));
    }

    #[test]
    fn integers_follow_go_syntax() {
        assert_eq!(parse_int("010"), Ok(8));
        assert_eq!(parse_int("0x1F"), Ok(31));
        assert_eq!(parse_int("0b101"), Ok(5));
        assert_eq!(parse_int("0o17"), Ok(15));
        assert_eq!(parse_int("-12"), Ok(-12));
        assert_eq!(parse_int("0x_1F"), Ok(31));
        assert!(parse_int("1_000").is_err());
        assert!(parse_int("").is_err());
        assert!(parse_int("08").is_err());
        assert!(parse_int("99999999999999999999").is_err());
    }

    #[test]
    fn durations_follow_go_syntax() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2us"), Ok(Duration::from_micros(2)));
        assert_eq!(parse_duration("2µs"), Ok(Duration::from_micros(2)));
        for bad in ["30", "", "s", "1d", "1..5s", "-5s", "1.s5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn go_duration_rendering() {
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(
            format_go_duration(Duration::new(471, 693_769_606)),
            "7m51.693769606s"
        );
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn help_lists_every_option_with_its_env_name() {
        let help = help_text();
        for o in SERVER_OPTIONS {
            assert!(help.contains(&format!("--{} ", o.name)), "{}", o.name);
            assert!(help.contains(&env_name(o.name)), "{}", o.name);
        }
        for o in TOKEN_OPTIONS {
            assert!(!help.contains(&format!("\n  --{} ", o.name)), "{}", o.name);
        }
    }

    #[test]
    fn tables_name_each_option_once_and_secrets_are_text() {
        for command in [&SERVER, &TOKEN, &SIDECAR] {
            for (i, o) in command.options.iter().enumerate() {
                assert!(
                    command.options[i + 1..].iter().all(|p| p.name != o.name),
                    "{} lists --{} twice",
                    command.name,
                    o.name
                );
                assert!(!o.secret || o.kind == Kind::Text, "--{}", o.name);
                assert!(o.name != "help" && o.name != "version");
            }
        }
    }

    #[test]
    fn no_secret_reaches_the_summary_or_debug_output() {
        const SENTINEL: &str = "hunter2-sentinel";
        let secrets: Vec<&str> = SERVER_OPTIONS
            .iter()
            .filter(|o| o.secret)
            .map(|o| o.name)
            .collect();
        assert_eq!(
            secrets,
            [
                "jwt_secret",
                "store_password",
                "replication_secret",
                "k8s_token"
            ]
        );
        // Every secret set by flag, then every one by environment.
        let flags: Vec<String> = secrets
            .iter()
            .flat_map(|name| [format!("--{name}"), SENTINEL.to_string()])
            .collect();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let by_env = |name: &str| {
            secrets
                .iter()
                .any(|s| env_name(s) == name)
                .then(|| SENTINEL.to_string())
        };
        for (args, env) in [
            (
                &flags[..],
                &(|_: &str| None) as &dyn Fn(&str) -> Option<String>,
            ),
            (&[][..], &by_env),
        ] {
            let (config, summary) = parse_serve(args, env).unwrap();
            assert!(!summary.contains(SENTINEL), "{summary}");
            assert!(!format!("{config:?}").contains(SENTINEL));
            for name in &secrets {
                assert!(summary.contains(&format!("{name}=(set)")), "{summary}");
            }
            assert_eq!(config.jwt_secret.expose(), SENTINEL);
            assert_eq!(config.store_password.expose(), SENTINEL);
        }
        let (_, summary) = parse_serve(&[], &|_| None).unwrap();
        for name in &secrets {
            assert!(summary.contains(&format!("{name}=(unset)")), "{summary}");
        }
    }

    #[test]
    fn summary_lists_every_option_in_table_order_with_its_effective_value() {
        let env = |name: &str| match name {
            "A8_API_PORT" => Some("9000".to_string()),
            "A8_AUTH_MODE" => Some("jwt, trusted".to_string()),
            "A8_DEFAULT_TTL" => Some("20s".to_string()),
            _ => None,
        };
        let (config, summary) = parse_serve(
            &[
                "--api_port",
                "0",
                "--jwt_secret",
                "s",
                "--cluster_dir",
                "/a b",
            ],
            &env,
        )
        .unwrap();
        let names: Vec<&str> = summary
            .split(' ')
            .filter_map(|pair| pair.split_once('=').map(|(name, _)| name))
            .filter(|name| SERVER_OPTIONS.iter().any(|o| o.name == *name))
            .collect();
        let table: Vec<&str> = SERVER_OPTIONS.iter().map(|o| o.name).collect();
        assert_eq!(names, table);
        for expected in [
            "api_bind=0.0.0.0",
            "api_port=0",
            "auth_mode=jwt,trusted",
            "default_ttl=20s",
            "idle_timeout=60s",
            "store_address=\"\"",
            "cluster_dir=\"/a b\"",
            "namespace_capacity=-1",
        ] {
            assert!(summary.contains(expected), "{expected} in {summary}");
        }
        assert!(summary.contains(&format!("workers={} ", config.workers)));
    }

    #[test]
    fn token_options_come_from_flags_only() {
        let (secret, namespace, ttl) =
            parse_token_with(&["--secret", "s", "--namespace", "team-a", "--ttl", "24h"]).unwrap();
        assert_eq!(secret.expose(), "s");
        assert_eq!(namespace.as_str(), "team-a");
        assert_eq!(ttl, Some(Duration::from_secs(86_400)));
        let (_, _, ttl) = parse_token_with(&["-secret=s", "-namespace", "n"]).unwrap();
        assert_eq!(ttl, None, "A8_TTL is not read");
        assert_eq!(format!("{secret:?}"), "(set)");
    }

    #[test]
    fn token_errors_name_the_flag() {
        for (args, expected) in [
            (
                &["--namespace", "n"][..],
                "a8registry token: --secret is required",
            ),
            (
                &["--secret", "s"],
                "a8registry token: --namespace is required",
            ),
            (
                &["--secret", "s", "--namespace", "n", "--ttl", "30"],
                "a8registry token: invalid value \"30\" for --ttl: a duration needs a unit",
            ),
            (
                &["--secret", "s", "--namespace", "n", "--ttl", "0s"],
                "a8registry token: invalid value \"0s\" for --ttl: must be > 0",
            ),
            (
                &["--secret", "s", "--namespace", "a\nb"],
                "a8registry token: invalid value \"a\\nb\" for --namespace: a namespace must not",
            ),
            (
                &["--secret", "s", "--namespace", "n", "--api_port", "1"],
                "a8registry token: unknown argument \"--api_port\"",
            ),
        ] {
            let err = parse_token_with(args).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1);
        }
    }

    #[test]
    fn each_command_has_its_own_help() {
        let help = |args: &[&str]| match parse(args.iter().map(OsString::from).collect(), &|_| None)
        {
            Ok(Command::Help(text)) => text,
            _ => panic!("expected help for {args:?}"),
        };
        let server = help(&["--help"]);
        assert!(server.contains("--api_port <int>\n      env A8_API_PORT, default 8080: "));
        assert!(server.contains("a8registry token --secret S"));
        let token = help(&["token", "--help"]);
        assert!(
            token.contains("--secret <text>\n      default (empty): "),
            "{token}"
        );
        assert!(token.contains("--ttl <duration>"));
        assert!(
            !token.contains("A8_") && !token.contains("--api_port"),
            "{token}"
        );
    }

    #[test]
    fn the_sidecar_command_starts_at_dashdash_or_the_first_free_argument() {
        let split = |args: &[&str]| {
            let (options, command) =
                split_sidecar_command(args.iter().map(OsString::from).collect());
            let text = |v: Vec<OsString>| -> Vec<String> {
                v.into_iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect()
            };
            (text(options), text(command))
        };
        assert_eq!(
            split(&[
                "--register",
                "--registry_token",
                "-abc",
                "app",
                "--port",
                "5000"
            ]),
            (
                vec![
                    "--register".into(),
                    "--registry_token".into(),
                    "-abc".into()
                ],
                vec!["app".into(), "--port".into(), "5000".into()]
            )
        );
        assert_eq!(
            split(&["-service=s", "--", "--looks-like-an-option"]),
            (
                vec!["-service=s".into()],
                vec!["--looks-like-an-option".into()]
            )
        );
        // A boolean takes no separate value: the next word starts the command.
        assert_eq!(split(&["--register", "true"]).1, ["true"]);
        let sidecar = |args: &[&str]| {
            let mut all = vec!["sidecar"];
            all.extend_from_slice(args);
            parse(all.iter().map(OsString::from).collect(), &|name: &str| {
                (name == "A8_SERVICE").then(|| "from-env:v1".to_string())
            })
        };
        match sidecar(&[
            "--register",
            "--endpoint_port",
            "80",
            "--registry_url",
            "http://r",
            "--",
            "app",
        ]) {
            Ok(Command::Sidecar(config)) => {
                assert_eq!(config.service_name, "from-env");
                assert_eq!(config.commands[0].argv, [OsString::from("app")]);
            }
            _ => panic!("expected a sidecar command"),
        }
        assert!(
            matches!(sidecar(&["--help"]), Ok(Command::Help(text)) if text.contains("A8_REGISTRY_URL"))
        );
        let err = sidecar(&["--dns_port", "x"]).err().unwrap().to_string();
        assert!(
            err.starts_with("a8registry sidecar: invalid value \"x\" for --dns_port (A8_DNS_PORT)"),
            "{err}"
        );
    }

    #[test]
    fn unknown_arguments_are_errors() {
        assert!(parse_with(&["--bogus", "1"], &[]).is_err());
    }
}
