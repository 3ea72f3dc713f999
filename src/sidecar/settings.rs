//! The sidecar's configuration (sidecar contract §2): the options given on the command line and
//! in the environment (read by the option table in `config.rs`), merged over the `--config` file
//! and the defaults, and validated whole before anything starts.
//!
//! Precedence is flag > environment > file > default. Every error is one line naming the option
//! with its flag and variable, or the file key, the bad value, and what is expected (exit 2).

use super::yaml::{self, Node, MAX_CONFIG_FILE_BYTES};
use crate::config::{excerpt, quoted, Secret, SIDECAR_COMMAND};
use crate::config::{parse_bool, parse_duration, parse_int, ConfigError, LogFormat, LogLevel};
use crate::registry::instance::EndpointType;
use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

/// The TTL asked for at registration when none is configured (the original's fixed request).
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Interval of a health check that names none.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Timeout of a health check that names none.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The registry API the sidecar speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `/api/v1/instances` (§3).
    Amalgam8,
    /// Netflix Eureka's `/apps/{app}/{id}` (§5).
    Eureka,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Amalgam8 => "amalgam8",
            Protocol::Eureka => "eureka",
        }
    }
}

/// What one health check probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An `http://` or `https://` request answered with exactly `code`.
    Http {
        url: String,
        method: String,
        code: u16,
        /// DER certificates of `ca_cert_file`; empty: the built-in roots.
        ca_certs: Vec<Vec<u8>>,
    },
    /// A TCP connection that opens.
    Tcp { host: String, port: u16 },
    /// A command that exits with `code`.
    Command {
        path: String,
        args: Vec<String>,
        code: i32,
    },
}

/// One health check with its schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
}

impl fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.probe {
            Probe::Http { url, method, .. } => write!(f, "{method} {url}"),
            Probe::Tcp { host, port } => {
                if host.contains(':') {
                    write!(f, "tcp://[{host}]:{port}")
                } else {
                    write!(f, "tcp://{host}:{port}")
                }
            }
            Probe::Command { path, args, .. } => {
                write!(f, "file://{path}")?;
                for arg in args {
                    write!(f, " {arg}")?;
                }
                Ok(())
            }
        }
    }
}

/// What the sidecar does when a supervised process exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExit {
    /// Deregister, stop the others and exit with its status.
    Terminate,
    /// Log it and carry on.
    Ignore,
}

/// One supervised process (§6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCommand {
    pub argv: Vec<OsString>,
    /// Added to the inherited environment, overriding it (S7).
    pub env: Vec<(String, String)>,
    pub on_exit: OnExit,
    /// Signals go to the command's process group.
    pub kill_group: bool,
}

/// The validated configuration of `a8registry sidecar`.
#[derive(Clone, Debug)]
pub struct SidecarConfig {
    pub service_name: String,
    pub tags: Vec<String>,
    /// `None`: the host's own address, looked up at each registration attempt.
    pub endpoint_host: Option<String>,
    pub endpoint_port: u16,
    pub endpoint_type: EndpointType,
    /// Without a trailing `/`.
    pub registry_url: String,
    pub registry_token: Secret,
    pub protocol: Protocol,
    /// Requested TTL in whole seconds, at least 1.
    pub ttl_secs: u32,
    pub eureka_app: String,
    /// `None`: `<host>:<service name>:<port>` at each attempt.
    pub eureka_instance_id: Option<String>,
    pub health_checks: Vec<HealthCheck>,
    pub commands: Vec<AppCommand>,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    /// Lines to log at warn once logging runs: ignored options and unknown file keys.
    pub warnings: Vec<String>,
}

/// The options given on the command line or in the environment (flag > environment), as text,
/// with the command after them.
#[derive(Debug, Default)]
pub struct Given {
    values: Vec<(&'static str, String)>,
    lists: Vec<(&'static str, Vec<String>)>,
    /// The supervised command: everything from `--` or the first free argument on.
    pub command: Vec<OsString>,
}

impl Given {
    /// Records a single-valued option's text.
    pub fn set(&mut self, name: &'static str, value: String) {
        self.values.retain(|(n, _)| *n != name);
        self.values.push((name, value));
    }

    /// Records a list option's items (environment items first, then each flag).
    pub fn set_list(&mut self, name: &'static str, items: Vec<String>) {
        self.lists.retain(|(n, _)| *n != name);
        self.lists.push((name, items));
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn list(&self, name: &str) -> Option<&[String]> {
        self.lists
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Options of the original that configure features outside the scope (§2.3): type-checked by
/// the option table, then ignored with a warning.
pub const IGNORED_OPTIONS: &[&str] = &[
    "proxy_adapter",
    "proxy_tls",
    "proxy_cert_chain_file",
    "proxy_private_key_file",
    "proxy_ca_cert_file",
    "rules_adapter",
    "controller_url",
    "controller_token",
    "controller_poll",
    "dns_port",
    "dns_domain",
    "registry_poll",
    "kubernetes_url",
    "kubernetes_token",
    "kubernetes_namespace",
    "eureka_url",
];

/// Top-level file keys of features outside the scope: ignored with a warning.
const IGNORED_FILE_KEYS: &[&str] = &[
    "proxy_adapter",
    "proxy_config",
    "rules_adapter",
    "controller",
    "dnsconfig",
];

const IGNORED_WARNING: &str = "it configures a feature a8registry sidecar does not include";

fn error(message: String) -> ConfigError {
    ConfigError::new(SIDECAR_COMMAND, message)
}

/// `--flag (A8_FLAG)`.
fn flag(name: &str) -> String {
    format!("--{name} (A8_{})", name.to_ascii_uppercase())
}

/// Where a value came from, for its error line.
#[derive(Clone, Debug)]
enum Origin {
    Option(&'static str),
    File(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Option(name) => f.write_str(&flag(name)),
            Origin::File(key) => write!(f, "{key} in the configuration file"),
        }
    }
}

fn invalid(origin: &Origin, value: &str, why: &str) -> ConfigError {
    error(format!(
        "invalid value {} for {origin}: {why}",
        quoted(value)
    ))
}

/// The configuration file's tree, with the warnings its reading produced.
struct File {
    root: Vec<(String, Node)>,
}

impl File {
    /// The node at a dotted key path, `None` when absent or null.
    fn node(&self, path: &str) -> Option<&Node> {
        let mut entries = &self.root;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let node = entries.iter().find(|(k, _)| k == part).map(|(_, v)| v)?;
            if parts.peek().is_none() {
                return match node {
                    Node::Null => None,
                    other => Some(other),
                };
            }
            match node {
                Node::Map(inner) => entries = inner,
                _ => return None,
            }
        }
        None
    }

    /// A scalar at `path`, or an error naming the key when it is a list or a mapping.
    fn text(&self, path: &str) -> Result<Option<String>, ConfigError> {
        scalar_of(self.node(path), path)
    }
}

fn scalar_of(node: Option<&Node>, key: &str) -> Result<Option<String>, ConfigError> {
    match node {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Scalar(text)) => Ok(Some(text.clone())),
        Some(other) => Err(error(format!(
            "invalid value for {key} in the configuration file: {} where a text is expected",
            other.kind()
        ))),
    }
}

fn list_of(node: Option<&Node>, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
    match node {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Seq(items)) => items
            .iter()
            .map(|item| match item {
                Node::Scalar(text) => Ok(text.clone()),
                Node::Null => Ok(String::new()),
                other => Err(error(format!(
                    "invalid value for {key} in the configuration file: {} where a list item \
                     (a text) is expected",
                    other.kind()
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(error(format!(
            "invalid value for {key} in the configuration file: {} where a list is expected",
            other.kind()
        ))),
    }
}

/// A YAML boolean (YAML 1.1 spellings, as the original's reader took them).
fn file_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// Reads options in precedence order: given (flag or environment), then the file, then nothing.
struct Sources<'a> {
    given: &'a Given,
    file: Option<File>,
}

impl Sources<'_> {
    /// The text of `name`, given or from the file key `key`, with where it came from.
    fn text(
        &self,
        name: &'static str,
        key: Option<&str>,
    ) -> Result<Option<(String, Origin)>, ConfigError> {
        if let Some(value) = self.given.get(name) {
            return Ok(Some((value.to_string(), Origin::Option(name))));
        }
        match (key, &self.file) {
            (Some(key), Some(file)) => Ok(file
                .text(key)?
                .map(|value| (value, Origin::File(key.to_string())))),
            _ => Ok(None),
        }
    }

    fn text_or(
        &self,
        name: &'static str,
        key: Option<&str>,
        default: &str,
    ) -> Result<(String, Origin), ConfigError> {
        Ok(self
            .text(name, key)?
            .unwrap_or_else(|| (default.to_string(), Origin::Option(name))))
    }

    fn bool(&self, name: &'static str, key: Option<&str>) -> Result<bool, ConfigError> {
        match self.text(name, key)? {
            None => Ok(false),
            Some((value, origin @ Origin::Option(_))) => parse_bool(&value).ok_or_else(|| {
                invalid(
                    &origin,
                    &value,
                    "a boolean is one of true, false, 1, 0, t, f",
                )
            }),
            Some((value, origin @ Origin::File(_))) => file_bool(&value)
                .ok_or_else(|| invalid(&origin, &value, "a boolean is true or false")),
        }
    }

    fn duration(
        &self,
        name: &'static str,
        key: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match self.text(name, key)? {
            None => Ok(default),
            Some((value, origin)) => {
                parse_duration(&value).map_err(|why| invalid(&origin, &value, why))
            }
        }
    }
}

/// Builds the validated configuration from what was given and the file it names.
pub fn resolve(given: &Given) -> Result<SidecarConfig, ConfigError> {
    let mut warnings = Vec::new();
    let mut sources = Sources { given, file: None };

    if let Some(path) = given.get("config").filter(|p| !p.is_empty()) {
        sources.file = Some(read_file(path, &mut warnings)?);
    }

    let log_level = {
        let (value, origin) = sources.text_or("log_level", Some("log_level"), "info")?;
        match value.as_str() {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "fatal" => LogLevel::Fatal,
            "panic" => LogLevel::Panic,
            _ => {
                return Err(invalid(
                    &origin,
                    &value,
                    "one of debug, info, warn, warning, error, fatal, panic (lowercase)",
                ))
            }
        }
    };
    let log_format = {
        let (value, origin) = sources.text_or("log_format", Some("log_format"), "text")?;
        match value.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            "logstash" => LogFormat::Logstash,
            _ => return Err(invalid(&origin, &value, "one of text, json, logstash")),
        }
    };

    if !sources.bool("register", Some("register"))? {
        return Err(error(format!(
            "nothing to do: {} is not set",
            flag("register")
        )));
    }
    for (name, what) in [("proxy", "the proxy"), ("dns", "the DNS server")] {
        if sources.bool(name, Some(name))? {
            let source = match sources.text(name, Some(name))? {
                Some((_, origin)) => origin.to_string(),
                None => flag(name),
            };
            return Err(error(format!(
                "{source} is not supported: a8registry sidecar registers only ({what} is not included)"
            )));
        }
    }
    if let Some((pod, origin)) = sources.text("kubernetes_pod_name", Some("kubernetes.pod_name"))? {
        if !pod.is_empty() {
            return Err(error(format!(
                "{origin} is not supported: a8registry sidecar does not read the service from \
                 a Kubernetes pod; give --service and --endpoint_host"
            )));
        }
    }
    {
        let (adapter, origin) =
            sources.text_or("discovery_adapter", Some("discovery_adapter"), "amalgam8")?;
        match adapter.as_str() {
            "amalgam8" => {}
            "kubernetes" | "eureka" => {
                return Err(invalid(
                    &origin,
                    &adapter,
                    "registration goes through the amalgam8 adapter only; to register into a \
                     Eureka server use --registry_protocol eureka",
                ))
            }
            _ => return Err(invalid(&origin, &adapter, "must be amalgam8")),
        }
    }

    let (service_name, tags) = service(&sources)?;
    let endpoint_host = match sources.text("endpoint_host", Some("endpoint.host"))? {
        Some((host, origin)) if !host.is_empty() => {
            check_host(&host, &origin)?;
            Some(host)
        }
        _ => None,
    };
    let endpoint_port = {
        let (value, origin) = sources.text_or("endpoint_port", Some("endpoint.port"), "0")?;
        match parse_int(&value) {
            Ok(port) if (1..=65535).contains(&port) => port as u16,
            Ok(_) if value == "0" => {
                return Err(error(format!(
                    "{origin} is required: the port the application listens on, 1..65535"
                )))
            }
            Ok(_) => return Err(invalid(&origin, &value, "must be 1..65535")),
            Err(why) => return Err(invalid(&origin, &value, why)),
        }
    };
    let endpoint_type = {
        let (value, origin) = sources.text_or("endpoint_type", Some("endpoint.type"), "http")?;
        EndpointType::parse(&value).ok_or_else(|| {
            invalid(
                &origin,
                &value,
                "one of http, https, tcp, udp, user (lowercase)",
            )
        })?
    };
    let registry_url = {
        let Some((value, origin)) = sources.text("registry_url", Some("registry.url"))? else {
            return Err(error(format!(
                "{} is required, e.g. http://registry:8080",
                flag("registry_url")
            )));
        };
        if value.is_empty() {
            return Err(error(format!(
                "{origin} is required, e.g. http://registry:8080"
            )));
        }
        match split_url(&value) {
            Some(url) if (url.scheme == "http" || url.scheme == "https") && url.host_ok() => {}
            _ => {
                return Err(invalid(
                    &origin,
                    &value,
                    "must be an http:// or https:// URL with a host",
                ))
            }
        }
        if value.parse::<ureq::http::Uri>().is_err() {
            return Err(invalid(&origin, &value, "not a valid URL"));
        }
        // Request paths are appended to the base: a query or fragment would end up in front
        // of them (`?a=1/api/v1/instances`), so neither can be kept.
        if value.contains(['?', '#']) {
            return Err(invalid(
                &origin,
                &value,
                "a query (?) or fragment (#) is not allowed: request paths are appended to it",
            ));
        }
        value.trim_end_matches('/').to_string()
    };
    let registry_token = Secret::new(
        sources
            .text("registry_token", Some("registry.token"))?
            .map(|(token, _)| token)
            .unwrap_or_default(),
    );
    let protocol = {
        let (value, origin) =
            sources.text_or("registry_protocol", Some("registry.protocol"), "amalgam8")?;
        match value.as_str() {
            "amalgam8" => Protocol::Amalgam8,
            "eureka" => Protocol::Eureka,
            _ => return Err(invalid(&origin, &value, "one of amalgam8, eureka")),
        }
    };
    let ttl_secs = {
        let ttl = sources.duration("ttl", Some("ttl"), DEFAULT_TTL)?;
        if ttl < Duration::from_secs(1) {
            let origin = sources
                .text("ttl", Some("ttl"))?
                .map_or(Origin::Option("ttl"), |(_, o)| o);
            let shown = sources
                .text("ttl", Some("ttl"))?
                .map(|(v, _)| v)
                .unwrap_or_default();
            return Err(invalid(&origin, &shown, "must be at least 1s"));
        }
        let whole = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        u32::try_from(whole).unwrap_or(u32::MAX)
    };
    let eureka_app = sources
        .text("eureka_app", Some("eureka.app"))?
        .map(|(app, _)| app)
        .filter(|app| !app.is_empty())
        .unwrap_or_else(|| service_name.to_ascii_uppercase());
    let eureka_instance_id = sources
        .text("eureka_instance_id", Some("eureka.instance_id"))?
        .map(|(id, _)| id)
        .filter(|id| !id.is_empty());

    let interval = positive(&sources, "healthcheck_interval", DEFAULT_CHECK_INTERVAL)?;
    let timeout = positive(&sources, "healthcheck_timeout", DEFAULT_CHECK_TIMEOUT)?;
    let mut health_checks = match &sources.file {
        Some(file) => file_checks(file, &mut warnings)?,
        None => Vec::new(),
    };
    for url in given.list("healthchecks").unwrap_or_default() {
        if url.is_empty() {
            continue;
        }
        health_checks.push(flag_check(url, interval, timeout)?);
    }

    let mut commands = match &sources.file {
        Some(file) => file_commands(file, &mut warnings)?,
        None => Vec::new(),
    };
    if !given.command.is_empty() {
        commands.push(AppCommand {
            argv: given.command.clone(),
            env: Vec::new(),
            on_exit: OnExit::Terminate,
            kill_group: false,
        });
    }

    if sources.bool("supervise", Some("supervise"))? {
        warnings.push(
            "--supervise (A8_SUPERVISE) is deprecated and ignored: the command after the \
             options is always supervised"
                .to_string(),
        );
    }
    for name in IGNORED_OPTIONS {
        if given.get(name).is_some() || given.list(name).is_some() {
            warnings.push(format!("{} is ignored: {IGNORED_WARNING}", flag(name)));
        }
    }

    Ok(SidecarConfig {
        service_name,
        tags,
        endpoint_host,
        endpoint_port,
        endpoint_type,
        registry_url,
        registry_token,
        protocol,
        ttl_secs,
        eureka_app,
        eureka_instance_id,
        health_checks,
        commands,
        log_level,
        log_format,
        warnings,
    })
}

fn positive(
    sources: &Sources<'_>,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let value = sources.duration(name, None, default)?;
    if value.is_zero() {
        let shown = sources.given.get(name).unwrap_or_default();
        return Err(invalid(&Origin::Option(name), shown, "must be > 0"));
    }
    Ok(value)
}

/// `--service name[:tag,tag]` wins as a whole over the file's `service.name` and `service.tags`.
fn service(sources: &Sources<'_>) -> Result<(String, Vec<String>), ConfigError> {
    let (name, tags) = if let Some(value) = sources.given.get("service") {
        let (name, tags) = match value.split_once(':') {
            Some((name, tags)) => (name, tags.split(',').map(str::to_string).collect()),
            None => (value, Vec::new()),
        };
        (name.to_string(), tags)
    } else {
        let file = sources.file.as_ref();
        let name = match file {
            Some(file) => file.text("service.name")?.unwrap_or_default(),
            None => String::new(),
        };
        let tags = match file {
            Some(file) => list_of(file.node("service.tags"), "service.tags")?.unwrap_or_default(),
            None => Vec::new(),
        };
        (name, tags)
    };
    if name.is_empty() {
        return Err(error(format!(
            "{} is required: the service name, optionally followed by :tag,tag",
            flag("service")
        )));
    }
    // S1: empty tag texts are dropped (`name:` registers no tags).
    let tags = tags.into_iter().filter(|t| !t.is_empty()).collect();
    Ok((name, tags))
}

/// A host text that can go into `host:port`: no spaces, no `/`.
fn check_host(host: &str, origin: &Origin) -> Result<(), ConfigError> {
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '@'))
    {
        return Err(invalid(
            origin,
            host,
            "must be a host name or an IP address",
        ));
    }
    Ok(())
}

/// The parts of `scheme://authority/rest`, enough to check a URL's scheme, host and port.
struct UrlParts<'a> {
    scheme: &'a str,
    /// Without user information.
    host: &'a str,
    port: Option<&'a str>,
    rest: &'a str,
}

impl UrlParts<'_> {
    fn host_ok(&self) -> bool {
        !self.host.is_empty()
            && self
                .port
                .is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
    }
}

fn split_url(text: &str) -> Option<UrlParts<'_>> {
    let (scheme, after) = text.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, tail) = bracketed.split_once(']')?;
        match tail {
            "" => (host, None),
            _ => (host, Some(tail.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.chars().any(|c| c.is_whitespace()) {
        return None;
    }
    Some(UrlParts {
        scheme: &text[..scheme.len()],
        host,
        port,
        rest,
    })
}

/// `host:port` or `[v6]:port` into its parts.
fn host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = match text.strip_prefix('[') {
        Some(bracketed) => {
            let (host, tail) = bracketed.split_once(']')?;
            (host, tail.strip_prefix(':')?)
        }
        None => text.rsplit_once(':')?,
    };
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    if host.is_empty() || host.contains(['/', ' ']) {
        return None;
    }
    Some((host.to_string(), port))
}

/// One `--healthchecks` URL (§2.1): the scheme says the kind.
fn flag_check(
    url: &str,
    interval: Duration,
    timeout: Duration,
) -> Result<HealthCheck, ConfigError> {
    let origin = Origin::Option("healthchecks");
    let parts = split_url(url).ok_or_else(|| {
        invalid(
            &origin,
            url,
            "a health check is an http://, https://, tcp://host:port or file:///path URL",
        )
    })?;
    let probe = match parts.scheme {
        "http" | "https" => http_probe(url, "GET", 200, Vec::new(), &origin)?,
        "tcp" => tcp_probe(url, &origin)?,
        "file" => {
            if !(parts.host.is_empty() || parts.host == "localhost") || !parts.rest.starts_with('/')
            {
                return Err(invalid(
                    &origin,
                    url,
                    "a command check is file:///absolute/path",
                ));
            }
            let path = crate::http::router::percent_decode(parts.rest)
                .map(String::from)
                .ok_or_else(|| invalid(&origin, url, "bad percent-encoding"))?;
            Probe::Command {
                path,
                args: Vec::new(),
                code: 0,
            }
        }
        _ => {
            return Err(invalid(
                &origin,
                url,
                "the scheme must be http, https, tcp or file",
            ))
        }
    };
    Ok(HealthCheck {
        probe,
        interval,
        timeout,
    })
}

fn http_probe(
    url: &str,
    method: &str,
    code: u16,
    ca_certs: Vec<Vec<u8>>,
    origin: &Origin,
) -> Result<Probe, ConfigError> {
    match split_url(url) {
        Some(parts) if (parts.scheme == "http" || parts.scheme == "https") && parts.host_ok() => {}
        _ => {
            return Err(invalid(
                origin,
                url,
                "must be an http:// or https:// URL with a host",
            ))
        }
    }
    if url.parse::<ureq::http::Uri>().is_err() {
        return Err(invalid(origin, url, "not a valid URL"));
    }
    Ok(Probe::Http {
        url: url.to_string(),
        method: method.to_string(),
        code,
        ca_certs,
    })
}

fn tcp_probe(value: &str, origin: &Origin) -> Result<Probe, ConfigError> {
    let address = match value.strip_prefix("tcp://") {
        Some(rest) => rest.trim_end_matches('/'),
        None if !value.contains("://") => value,
        None => {
            return Err(invalid(
                origin,
                value,
                "must be tcp://host:port or host:port",
            ))
        }
    };
    let (host, port) = host_port(address)
        .ok_or_else(|| invalid(origin, value, "must be tcp://host:port (a port is needed)"))?;
    Ok(Probe::Tcp { host, port })
}

const STANDARD_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

const CHECK_KEYS: &[&str] = &[
    "type",
    "value",
    "interval",
    "timeout",
    "method",
    "code",
    "args",
    "ca_cert_file",
];

/// The file's `healthchecks` entries (§2.4).
fn file_checks(file: &File, warnings: &mut Vec<String>) -> Result<Vec<HealthCheck>, ConfigError> {
    let entries = match file.node("healthchecks") {
        None => return Ok(Vec::new()),
        Some(Node::Seq(entries)) => entries,
        Some(other) => {
            return Err(error(format!(
                "invalid value for healthchecks in the configuration file: {} where a list is \
                 expected",
                other.kind()
            )))
        }
    };
    let mut checks = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let key = |name: &str| format!("healthchecks[{index}].{name}");
        let Node::Map(fields) = entry else {
            return Err(error(format!(
                "invalid value for healthchecks[{index}] in the configuration file: {} where a \
                 mapping is expected",
                entry.kind()
            )));
        };
        for (name, _) in fields {
            if !CHECK_KEYS.contains(&name.as_str()) {
                warnings.push(format!(
                    "unknown key {} in the configuration file is ignored",
                    key(name)
                ));
            }
        }
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let text = |name: &str| scalar_of(field(name), &key(name));
        let Some(kind) = text("type")? else {
            return Err(error(format!(
                "{} in the configuration file is required: http, https, tcp or file",
                key("type")
            )));
        };
        let value = text("value")?.unwrap_or_default();
        let value_origin = Origin::File(key("value"));
        if value.is_empty() {
            return Err(error(format!("{value_origin} is required")));
        }
        let duration = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
            match text(name)? {
                None => Ok(default),
                Some(v) => {
                    let origin = Origin::File(key(name));
                    let d = parse_duration(&v).map_err(|why| invalid(&origin, &v, why))?;
                    if d.is_zero() {
                        return Err(invalid(&origin, &v, "must be > 0"));
                    }
                    Ok(d)
                }
            }
        };
        let interval = duration("interval", DEFAULT_CHECK_INTERVAL)?;
        let timeout = duration("timeout", DEFAULT_CHECK_TIMEOUT)?;
        let code = |default: i64, range: std::ops::RangeInclusive<i64>| match text("code")? {
            None => Ok(default),
            Some(v) => {
                let origin = Origin::File(key("code"));
                match parse_int(&v) {
                    Ok(n) if range.contains(&n) => Ok(n),
                    Ok(_) => Err(invalid(
                        &origin,
                        &v,
                        &format!("must be {}..{}", range.start(), range.end()),
                    )),
                    Err(why) => Err(invalid(&origin, &v, why)),
                }
            }
        };
        let probe = match kind.as_str() {
            "http" | "https" => {
                let method = text("method")?.unwrap_or_else(|| "GET".to_string());
                if !STANDARD_METHODS.contains(&method.as_str()) {
                    return Err(invalid(
                        &Origin::File(key("method")),
                        &method,
                        "a standard method in upper case, e.g. GET or HEAD",
                    ));
                }
                let ca_certs = match text("ca_cert_file")? {
                    None => Vec::new(),
                    Some(path) => read_ca_certs(&path, &Origin::File(key("ca_cert_file")))?,
                };
                http_probe(
                    &value,
                    &method,
                    code(200, 100..=599)? as u16,
                    ca_certs,
                    &value_origin,
                )?
            }
            "tcp" => tcp_probe(&value, &value_origin)?,
            "file" => Probe::Command {
                path: value,
                args: list_of(field("args"), &key("args"))?.unwrap_or_default(),
                code: code(0, 0..=255)? as i32,
            },
            _ => {
                return Err(invalid(
                    &Origin::File(key("type")),
                    &kind,
                    "one of http, https, tcp, file",
                ))
            }
        };
        checks.push(HealthCheck {
            probe,
            interval,
            timeout,
        });
    }
    Ok(checks)
}

/// The certificates of a PEM file, as DER.
fn read_ca_certs(path: &str, origin: &Origin) -> Result<Vec<Vec<u8>>, ConfigError> {
    let pem = read_at_most(path, MAX_CA_FILE_BYTES)
        .map_err(|e| invalid(origin, path, &format!("cannot read it: {e}")))?;
    if pem.len() > MAX_CA_FILE_BYTES {
        return Err(invalid(
            origin,
            path,
            &format!("larger than {MAX_CA_FILE_BYTES} bytes"),
        ));
    }
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert.der().to_vec()),
            Ok(_) => {}
            Err(e) => return Err(invalid(origin, path, &format!("not a PEM file: {e}"))),
        }
    }
    if certs.is_empty() {
        return Err(invalid(origin, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

const COMMAND_KEYS: &[&str] = &["cmd", "env", "on_exit", "kill_group"];

/// The file's `commands` entries (§2.4).
fn file_commands(file: &File, warnings: &mut Vec<String>) -> Result<Vec<AppCommand>, ConfigError> {
    let entries = match file.node("commands") {
        None => return Ok(Vec::new()),
        Some(Node::Seq(entries)) => entries,
        Some(other) => {
            return Err(error(format!(
                "invalid value for commands in the configuration file: {} where a list is expected",
                other.kind()
            )))
        }
    };
    let mut commands = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let key = |name: &str| format!("commands[{index}].{name}");
        let Node::Map(fields) = entry else {
            return Err(error(format!(
                "invalid value for commands[{index}] in the configuration file: {} where a \
                 mapping is expected",
                entry.kind()
            )));
        };
        for (name, _) in fields {
            if !COMMAND_KEYS.contains(&name.as_str()) {
                warnings.push(format!(
                    "unknown key {} in the configuration file is ignored",
                    key(name)
                ));
            }
        }
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let argv = list_of(field("cmd"), &key("cmd"))?.unwrap_or_default();
        if argv.is_empty() {
            return Err(error(format!(
                "{} in the configuration file must be a non-empty list, e.g. [/opt/app/server, \"9080\"]",
                key("cmd")
            )));
        }
        let mut env = Vec::new();
        for item in list_of(field("env"), &key("env"))?.unwrap_or_default() {
            match item.split_once('=') {
                Some((name, value)) if !name.is_empty() => {
                    env.push((name.to_string(), value.to_string()))
                }
                _ => {
                    return Err(invalid(
                        &Origin::File(key("env")),
                        &item,
                        "each item is NAME=value",
                    ))
                }
            }
        }
        let on_exit = match scalar_of(field("on_exit"), &key("on_exit"))?.as_deref() {
            None | Some("ignore") => OnExit::Ignore,
            Some("terminate") => OnExit::Terminate,
            Some(other) => {
                return Err(invalid(
                    &Origin::File(key("on_exit")),
                    other,
                    "one of terminate, ignore",
                ))
            }
        };
        let kill_group = match scalar_of(field("kill_group"), &key("kill_group"))? {
            None => false,
            Some(v) => file_bool(&v).ok_or_else(|| {
                invalid(
                    &Origin::File(key("kill_group")),
                    &v,
                    "a boolean is true or false",
                )
            })?,
        };
        commands.push(AppCommand {
            argv: argv.into_iter().map(OsString::from).collect(),
            env,
            on_exit,
            kill_group,
        });
    }
    Ok(commands)
}

/// The keys the file may hold, by mapping; anything else is warned about.
const FILE_KEYS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "register",
            "proxy",
            "dns",
            "service",
            "endpoint",
            "discovery_adapter",
            "registry",
            "ttl",
            "eureka",
            "kubernetes",
            "healthchecks",
            "commands",
            "log_level",
            "log_format",
            "supervise",
            "proxy_adapter",
            "proxy_config",
            "rules_adapter",
            "controller",
            "dnsconfig",
        ],
    ),
    ("service", &["name", "tags"]),
    ("endpoint", &["host", "port", "type"]),
    ("registry", &["url", "token", "protocol", "poll"]),
    ("eureka", &["app", "instance_id", "urls"]),
    ("kubernetes", &["url", "token", "namespace", "pod_name"]),
];

/// Nested keys of features outside the scope.
const IGNORED_NESTED_KEYS: &[&str] = &[
    "registry.poll",
    "kubernetes.url",
    "kubernetes.token",
    "kubernetes.namespace",
    "eureka.urls",
];

/// Largest CA certificate file a health check reads.
const MAX_CA_FILE_BYTES: usize = 4 * 1024 * 1024;

/// The first `limit + 1` bytes of a file at most, so a device or an endless pipe given as a file
/// costs no more than that (one byte over tells the caller it was too large).
fn read_at_most(path: &str, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read_file(path: &str, warnings: &mut Vec<String>) -> Result<File, ConfigError> {
    let origin = flag("config");
    let shown = quoted(path);
    let bytes = read_at_most(path, MAX_CONFIG_FILE_BYTES)
        .map_err(|e| error(format!("cannot read {origin} {shown}: {e}")))?;
    if bytes.len() > MAX_CONFIG_FILE_BYTES {
        return Err(error(format!(
            "{origin} {shown} is larger than {MAX_CONFIG_FILE_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| error(format!("{origin} {shown} is not UTF-8 text")))?;
    let root = match yaml::parse(&text) {
        Ok(Node::Map(root)) => root,
        Ok(other) => {
            return Err(error(format!(
                "{origin} {shown}: the document must be a mapping of keys, not {}",
                other.kind()
            )))
        }
        Err(e) => return Err(error(format!("{origin} {shown}: {e}"))),
    };
    let file = File { root };
    for (section, keys) in FILE_KEYS {
        let entries = if section.is_empty() {
            &file.root
        } else {
            match file.node(section) {
                Some(Node::Map(entries)) => entries,
                None => continue,
                Some(other) => {
                    return Err(error(format!(
                        "invalid value for {section} in the configuration file: {} where a \
                         mapping is expected",
                        other.kind()
                    )))
                }
            }
        };
        for (key, _) in entries {
            let full = if section.is_empty() {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            if !keys.contains(&key.as_str()) {
                warnings.push(format!(
                    "unknown key {} in the configuration file is ignored",
                    excerpt(&full)
                ));
            } else if IGNORED_FILE_KEYS.contains(&full.as_str())
                || IGNORED_NESTED_KEYS.contains(&full.as_str())
            {
                warnings.push(format!(
                    "{full} in the configuration file is ignored: {IGNORED_WARNING}"
                ));
            }
        }
    }
    // The ignored settings are still checked for their type.
    if let Some((value, origin)) = file
        .text("registry.poll")?
        .map(|v| (v, Origin::File("registry.poll".into())))
    {
        parse_duration(&value).map_err(|why| invalid(&origin, &value, why))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(args: &[(&'static str, &str)]) -> Given {
        let mut given = Given::default();
        for (name, value) in args {
            if *name == "healthchecks" || *name == "eureka_url" {
                given.set_list(name, value.split(',').map(str::to_string).collect());
            } else {
                given.set(name, value.to_string());
            }
        }
        given
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("register", "true"),
        ("service", "reviews:v1,canary"),
        ("endpoint_port", "9080"),
        ("registry_url", "http://registry:8080/"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Given {
        let mut all: Vec<(&'static str, &str)> = MINIMAL.to_vec();
        all.extend_from_slice(extra);
        given(&all)
    }

    fn message(given: &Given) -> String {
        resolve(given).unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = resolve(&with(&[])).unwrap();
        assert_eq!(c.service_name, "reviews");
        assert_eq!(c.tags, ["v1", "canary"]);
        assert_eq!(c.endpoint_host, None);
        assert_eq!(c.endpoint_type, EndpointType::Http);
        assert_eq!(c.registry_url, "http://registry:8080");
        assert_eq!(c.protocol, Protocol::Amalgam8);
        assert_eq!(c.ttl_secs, 60);
        assert_eq!(c.eureka_app, "REVIEWS");
        assert!(c.health_checks.is_empty() && c.commands.is_empty());
        assert_eq!(c.log_level, LogLevel::Info);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn service_tags_are_split_at_the_first_colon_and_empty_ones_dropped() {
        let c = resolve(&with(&[("service", "a:b:c, d,,")])).unwrap();
        assert_eq!(
            (c.service_name.as_str(), c.tags),
            ("a", vec!["b:c".into(), " d".into()])
        );
        let c = resolve(&with(&[("service", "name:")])).unwrap();
        assert!(c.tags.is_empty());
        assert!(
            message(&with(&[("service", ":v1")])).contains("--service (A8_SERVICE) is required")
        );
    }

    #[test]
    fn ttl_is_whole_seconds_rounded_up_and_at_least_one() {
        assert_eq!(resolve(&with(&[("ttl", "1500ms")])).unwrap().ttl_secs, 2);
        assert_eq!(resolve(&with(&[("ttl", "3s")])).unwrap().ttl_secs, 3);
        assert!(message(&with(&[("ttl", "30")])).contains("--ttl (A8_TTL)"));
        assert!(message(&with(&[("ttl", "500ms")])).contains("at least 1s"));
    }

    #[test]
    fn configuration_errors_name_the_option() {
        for (extra, expected) in [
            (
                ("endpoint_port", "0"),
                "--endpoint_port (A8_ENDPOINT_PORT) is required",
            ),
            (
                ("endpoint_port", "70000"),
                "invalid value \"70000\" for --endpoint_port (A8_ENDPOINT_PORT): must be 1..65535",
            ),
            (
                ("endpoint_type", "HTTP"),
                "--endpoint_type (A8_ENDPOINT_TYPE)",
            ),
            (
                ("registry_url", "ftp://x"),
                "--registry_url (A8_REGISTRY_URL)",
            ),
            (
                ("registry_url", "http://"),
                "--registry_url (A8_REGISTRY_URL)",
            ),
            (
                ("registry_url", ""),
                "--registry_url (A8_REGISTRY_URL) is required",
            ),
            (
                ("register", "false"),
                "nothing to do: --register (A8_REGISTER) is not set",
            ),
            (("register", ""), "nothing to do"),
            (
                ("proxy", "true"),
                "--proxy (A8_PROXY) is not supported: a8registry sidecar registers only",
            ),
            (("dns", "1"), "--dns (A8_DNS) is not supported"),
            (
                ("kubernetes_pod_name", "p"),
                "--kubernetes_pod_name (A8_KUBERNETES_POD_NAME) is not supported",
            ),
            (
                ("discovery_adapter", "eureka"),
                "--registry_protocol eureka",
            ),
            (("discovery_adapter", "consul"), "must be amalgam8"),
            (("log_level", "INFO"), "--log_level (A8_LOG_LEVEL)"),
            (("log_format", "xml"), "--log_format (A8_LOG_FORMAT)"),
            (
                ("registry_protocol", "consul"),
                "--registry_protocol (A8_REGISTRY_PROTOCOL)",
            ),
            (
                ("healthchecks", "ftp://x"),
                "--healthchecks (A8_HEALTHCHECKS)",
            ),
            (("healthchecks", "tcp://host"), "a port is needed"),
            (("healthchecks", "http://"), "with a host"),
            (("healthchecks", "localhost:80"), "--healthchecks"),
            (
                ("healthcheck_interval", "0s"),
                "--healthcheck_interval (A8_HEALTHCHECK_INTERVAL): must be > 0",
            ),
            (("endpoint_host", "a b"), "--endpoint_host"),
        ] {
            let err = message(&with(&[extra]));
            assert!(err.contains(expected), "{extra:?}: {err}");
            assert!(err.starts_with("a8registry sidecar: "), "{err}");
            assert_eq!(err.lines().count(), 1);
        }
        let err = message(&given(&[("register", "true"), ("endpoint_port", "1")]));
        assert!(err.contains("--service (A8_SERVICE) is required"), "{err}");
    }

    #[test]
    fn health_check_urls_give_their_kind() {
        let c = resolve(&with(&[
            (
                "healthchecks",
                "http://localhost:9080/health,tcp://[::1]:9080,file:///opt/check%20it.sh,",
            ),
            ("healthcheck_interval", "2s"),
        ]))
        .unwrap();
        let probes: Vec<Probe> = c.health_checks.iter().map(|c| c.probe.clone()).collect();
        assert_eq!(
            probes,
            vec![
                Probe::Http {
                    url: "http://localhost:9080/health".into(),
                    method: "GET".into(),
                    code: 200,
                    ca_certs: vec![]
                },
                Probe::Tcp {
                    host: "::1".into(),
                    port: 9080
                },
                Probe::Command {
                    path: "/opt/check it.sh".into(),
                    args: vec![],
                    code: 0
                },
            ]
        );
        assert!(c
            .health_checks
            .iter()
            .all(|c| c.interval == Duration::from_secs(2)));
        assert!(c
            .health_checks
            .iter()
            .all(|c| c.timeout == DEFAULT_CHECK_TIMEOUT));
    }

    #[test]
    fn ignored_options_warn_once_each() {
        let c = resolve(&with(&[
            ("controller_url", "http://controller"),
            ("eureka_url", "http://e"),
            ("supervise", "true"),
        ]))
        .unwrap();
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(c
            .warnings
            .iter()
            .any(|w| w.starts_with("--controller_url (A8_CONTROLLER_URL) is ignored")));
    }

    fn write_file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("a8-sidecar-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn the_file_sits_between_the_environment_and_the_defaults() {
        let path = write_file(
            "full.yaml",
            "register: true\nservice:\n  name: reviews\n  tags: [v1, canary]\nendpoint:\n  host: 10.0.0.5\n  port: 9080\n  type: tcp\nregistry:\n  url: http://registry:8080\n  token: ns1\n  protocol: eureka\n  poll: 15s\nttl: 30s\neureka:\n  app: REV\n  instance_id: reviews-1\nhealthchecks:\n  - type: http\n    value: http://localhost:9080/health\n    interval: 10s\n    timeout: 2s\n    method: HEAD\n    code: 204\n  - type: tcp\n    value: localhost:9080\n  - type: file\n    value: /opt/check.sh\n    args: [--quick]\n    code: 3\ncommands:\n  - cmd: [/opt/app, \"9080\"]\n    env: [MODE=prod]\n    on_exit: terminate\n    kill_group: true\n  - cmd: [/opt/helper]\nlog_level: debug\nlog_format: json\nbogus: 1\ncontroller:\n  url: http://c\n",
        );
        let mut g = given(&[("config", &path), ("endpoint_port", "7000")]);
        g.command = vec!["python3".into(), "app.py".into()];
        let c = resolve(&g).unwrap();
        assert_eq!(c.service_name, "reviews");
        assert_eq!(c.tags, ["v1", "canary"]);
        assert_eq!(c.endpoint_host.as_deref(), Some("10.0.0.5"));
        assert_eq!(c.endpoint_port, 7000, "the flag wins");
        assert_eq!(c.endpoint_type, EndpointType::Tcp);
        assert_eq!(c.registry_token.expose(), "ns1");
        assert_eq!(c.protocol, Protocol::Eureka);
        assert_eq!(c.ttl_secs, 30);
        assert_eq!(c.eureka_app, "REV");
        assert_eq!(c.eureka_instance_id.as_deref(), Some("reviews-1"));
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.health_checks.len(), 3);
        assert_eq!(
            c.health_checks[0],
            HealthCheck {
                probe: Probe::Http {
                    url: "http://localhost:9080/health".into(),
                    method: "HEAD".into(),
                    code: 204,
                    ca_certs: vec![]
                },
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
            }
        );
        assert_eq!(c.health_checks[1].interval, DEFAULT_CHECK_INTERVAL);
        assert_eq!(
            c.health_checks[2].probe,
            Probe::Command {
                path: "/opt/check.sh".into(),
                args: vec!["--quick".into()],
                code: 3
            }
        );
        assert_eq!(c.commands.len(), 3);
        assert_eq!(
            c.commands[0].env,
            [("MODE".to_string(), "prod".to_string())]
        );
        assert!(c.commands[0].kill_group && c.commands[0].on_exit == OnExit::Terminate);
        assert_eq!(c.commands[1].on_exit, OnExit::Ignore);
        assert_eq!(
            c.commands[2].argv,
            [OsString::from("python3"), "app.py".into()]
        );
        assert_eq!(c.commands[2].on_exit, OnExit::Terminate);
        let warned = c.warnings.join("\n");
        for key in [
            "unknown key bogus",
            "controller in the configuration file is ignored",
            "registry.poll in the configuration file is ignored",
        ] {
            assert!(warned.contains(key), "{key}: {warned}");
        }
        // The environment (here: given) wins over the file, even when empty.
        let g = given(&[("config", &path), ("service", "other")]);
        let c = resolve(&g).unwrap();
        assert_eq!(c.service_name, "other");
        assert!(c.tags.is_empty());
    }

    #[test]
    fn file_errors_name_the_key() {
        for (text, expected) in [
            ("register: true\nendpoint:\n  port: abc\n", "invalid value \"abc\" for endpoint.port in the configuration file"),
            ("register: true\nservice:\n  name: [a]\n", "service.name in the configuration file: a list where a text is expected"),
            ("register: true\nhealthchecks:\n  - type: http\n    value: http://x\n    interval: 30\n", "healthchecks[0].interval"),
            ("register: true\nhealthchecks:\n  - value: http://x\n", "healthchecks[0].type in the configuration file is required"),
            ("register: true\nhealthchecks:\n  - type: http\n    value: http://x\n    method: get\n", "healthchecks[0].method"),
            ("register: true\nhealthchecks:\n  - type: http\n    value: http://x\n    code: 700\n", "healthchecks[0].code"),
            ("register: true\ncommands:\n  - cmd: []\n", "commands[0].cmd"),
            ("register: true\ncommands:\n  - cmd: [a]\n    on_exit: restart\n", "commands[0].on_exit"),
            ("register: true\ncommands:\n  - cmd: [a]\n    env: [NOVALUE]\n", "commands[0].env"),
            ("register: true\nproxy: true\n", "proxy in the configuration file is not supported"),
            ("register: true\nkubernetes:\n  pod_name: p\n", "kubernetes.pod_name in the configuration file is not supported"),
            ("register: true\nregistry:\n  poll: 15\n", "registry.poll"),
            ("register: true\nservice: &a x\n", "line 2: anchors are not supported"),
            ("- a\n", "must be a mapping"),
            ("register: maybe\n", "register in the configuration file"),
        ] {
            let path = write_file("bad.yaml", text);
            let mut g = given(&[("config", &path)]);
            if !text.contains("service") {
                g.set("service", "s".into());
            }
            g.set("registry_url", "http://r".into());
            if !text.contains("port") {
                g.set("endpoint_port", "1".into());
            }
            let err = message(&g);
            assert!(err.contains(expected), "{text:?}: {err}");
            assert_eq!(err.lines().count(), 1);
        }
        let err = message(&given(&[("config", "/nonexistent/sidecar.yaml")]));
        assert!(err.contains("cannot read --config (A8_CONFIG)"), "{err}");
    }
}
