//! The device-registration settings in `[target]` (modes `mqtt` and `https`), their types and
//! validation: endpoint, ID scope, TLS trust, hub connection strings, timeouts, polling, back-off.
//! Secrets (`${DPS_GROUP_KEY}`, connection strings) are expanded here and kept as [`Secret`]s.

use std::path::PathBuf;
use std::time::Duration;

use super::error::ScenarioError;
use super::raw;
use super::validate::Validator;
use super::Secret;

type Result<T> = std::result::Result<T, ScenarioError>;

/// How devices reach DPS.
#[derive(Debug, Clone, PartialEq)]
pub enum Trust {
    /// The embedded emulator's generated CA.
    Emulator,
    /// The system's root certificates (real Azure).
    System,
    /// A PEM file of trusted certificates.
    Pem(PathBuf),
    /// No TLS (the emulator's plain listeners).
    Plain,
}

/// Which local addresses device connections are opened from (`target.source_addrs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceAddrs {
    /// Loopback targets: spread over [`SourceAddrs::LOOPBACK_DEFAULT`] addresses
    /// 127.0.0.1, 127.0.0.2, …; other targets: the kernel's choice.
    Auto,
    /// The kernel's choice (one source address).
    Kernel,
    /// Round-robin over these (each connection binds one; the port is the kernel's, picked at
    /// connect time so that ports are shared across destinations).
    List(Vec<std::net::IpAddr>),
}

impl SourceAddrs {
    /// How many loopback source addresses `Auto` uses: 16 × the ~28,000 ephemeral ports
    /// outlast a minute of TIME_WAIT at 5,000 connections a second with room to spare.
    pub const LOOPBACK_DEFAULT: u8 = 16;

    /// The first `n` loopback addresses 127.0.0.1, 127.0.0.2, ….
    pub fn loopback(n: u32) -> Vec<std::net::IpAddr> {
        (1..=n)
            .map(|i| {
                let [_, a, b, c] = i.to_be_bytes();
                std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, a, b, c))
            })
            .collect()
    }

    /// The addresses connections to `dest` are spread over (empty: the kernel picks one).
    pub fn for_destination(&self, dest: std::net::IpAddr) -> Vec<std::net::IpAddr> {
        match self {
            SourceAddrs::Kernel => Vec::new(),
            SourceAddrs::Auto if dest.is_loopback() && dest.is_ipv4() => {
                Self::loopback(u32::from(Self::LOOPBACK_DEFAULT))
            }
            SourceAddrs::Auto => Vec::new(),
            SourceAddrs::List(l) => l
                .iter()
                .copied()
                .filter(|a| a.is_ipv4() == dest.is_ipv4())
                .collect(),
        }
    }
}

/// Device registration settings (`[target]` in `mqtt`/`https` mode).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTarget {
    /// `host:port` of DPS; `None` = the embedded emulator, started in-process.
    pub endpoint: Option<(String, u16)>,
    /// ID scope; `None` = the emulator's.
    pub id_scope: Option<String>,
    /// TLS trust.
    pub tls: Trust,
    /// IoT Hub connection strings for twin verification (the emulator's own when embedded).
    pub hub_connection_strings: Vec<Secret>,
    /// A device's whole registration must end within this.
    pub device_timeout: Duration,
    /// `retry-after` is honoured but raised to at least this…
    pub poll_floor: Duration,
    /// …and lowered to at most this.
    pub poll_cap: Duration,
    /// First back-off after a 429 without `retry-after` (doubled each time, with jitter).
    pub backoff_initial: Duration,
    /// Largest back-off.
    pub backoff_max: Duration,
    /// Read each assigned device's twin from its hub and check it.
    pub verify_twins: bool,
    /// Twin reads per second at most (separate from the registration rate).
    pub twin_rate: f64,
    /// Local addresses connections are opened from.
    pub source_addrs: SourceAddrs,
    /// One connect attempt (TCP, TLS and, over MQTT, CONNACK) must finish within this.
    pub connect_timeout: Duration,
    /// Connect attempts after the first that failed or timed out (reported apart).
    pub connect_retries: u32,
    /// Accept a server certificate chain verified within the last minute without verifying it
    /// again (the handshake signature is still checked on every connection).
    pub tls_chain_cache: bool,
}

impl Default for DeviceTarget {
    fn default() -> Self {
        Self {
            endpoint: None,
            id_scope: None,
            tls: Trust::Emulator,
            hub_connection_strings: Vec::new(),
            device_timeout: Duration::from_secs(60),
            poll_floor: Duration::ZERO,
            poll_cap: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            verify_twins: true,
            twin_rate: 500.0,
            source_addrs: SourceAddrs::Auto,
            connect_timeout: Duration::from_secs(10),
            connect_retries: 0,
            tls_chain_cache: true,
        }
    }
}

impl Validator<'_> {
    fn source_addrs(&self, sa: &toml::Spanned<raw::SourceAddrs>) -> Result<SourceAddrs> {
        const KEY: &str = "target.source_addrs";
        match sa.get_ref() {
            raw::SourceAddrs::Switch(true) => Ok(SourceAddrs::Auto),
            raw::SourceAddrs::Switch(false) | raw::SourceAddrs::Count(0 | 1) => {
                Ok(SourceAddrs::Kernel)
            }
            raw::SourceAddrs::Count(n) if (2..=65_534).contains(n) => Ok(SourceAddrs::List(
                SourceAddrs::loopback(u32::try_from(*n).unwrap_or(1)),
            )),
            raw::SourceAddrs::Count(n) => self.err(
                sa.span(),
                KEY,
                format!("{n}: a count of loopback addresses is 0 to 65534"),
            ),
            raw::SourceAddrs::List(l) if l.is_empty() => Ok(SourceAddrs::Kernel),
            raw::SourceAddrs::List(l) => {
                let mut out = Vec::with_capacity(l.len());
                for a in l {
                    match a.parse::<std::net::IpAddr>() {
                        Ok(ip) => out.push(ip),
                        Err(_) => {
                            return self.err(
                                sa.span(),
                                KEY,
                                format!("`{a}` is not an IP address (e.g. \"127.0.0.2\")"),
                            )
                        }
                    }
                }
                Ok(SourceAddrs::List(out))
            }
        }
    }

    pub(super) fn device_target(&self, t: &raw::Target) -> Result<DeviceTarget> {
        let mut d = DeviceTarget::default();
        if let Some(e) = &t.endpoint {
            let text = self.expand(e, "target.endpoint")?;
            let parsed = text
                .rsplit_once(':')
                .and_then(|(h, p)| {
                    Some((
                        h.trim_matches(['[', ']']).to_owned(),
                        p.parse::<u16>().ok()?,
                    ))
                })
                .filter(|(h, _)| !h.is_empty());
            match parsed {
                Some(hp) => d.endpoint = Some(hp),
                None => {
                    return self.err(
                        e.span(),
                        "target.endpoint",
                        format!("`{text}` is not host:port, e.g. \"global.azure-devices-provisioning.net:8883\""),
                    )
                }
            }
            // A real endpoint is trusted through the system roots unless told otherwise.
            d.tls = Trust::System;
        }
        if let Some(s) = &t.id_scope {
            d.id_scope = Some(self.expand(s, "target.id_scope")?);
        }
        if let Some(tls) = &t.tls {
            d.tls = match tls.get_ref().as_str() {
                "emulator" => Trust::Emulator,
                "system" => Trust::System,
                "plain" => Trust::Plain,
                path if path.ends_with(".pem") || path.contains('/') => Trust::Pem(PathBuf::from(path)),
                other => {
                    return self.err(
                        tls.span(),
                        "target.tls",
                        format!("`{other}`: choose from \"emulator\", \"system\", \"plain\", or a path to a PEM file"),
                    )
                }
            };
        }
        for cs in t.hub_connection_strings.iter().flatten() {
            let text = self.expand(cs, "target.hub_connection_strings")?;
            let Some((_, _, key)) = crate::sas::parse_connection_string(&text) else {
                return self.err(
                    cs.span(),
                    "target.hub_connection_strings",
                    "not an IoT Hub connection string (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)",
                );
            };
            if let Err(e) = crate::device::keys::decode_key(&key) {
                return self.err(
                    cs.span(),
                    "target.hub_connection_strings",
                    format!("SharedAccessKey: {e}"),
                );
            }
            d.hub_connection_strings.push(Secret::new(text));
        }
        let dur = |v: &Option<toml::Spanned<String>>,
                   key: &str,
                   into: &mut std::time::Duration|
         -> Result<()> {
            if let Some(s) = v {
                *into = self.duration(s, key)?;
            }
            Ok(())
        };
        dur(
            &t.device_timeout,
            "target.device_timeout",
            &mut d.device_timeout,
        )?;
        dur(&t.poll_floor, "target.poll_floor", &mut d.poll_floor)?;
        dur(&t.poll_cap, "target.poll_cap", &mut d.poll_cap)?;
        dur(
            &t.backoff_initial,
            "target.backoff_initial",
            &mut d.backoff_initial,
        )?;
        dur(&t.backoff_max, "target.backoff_max", &mut d.backoff_max)?;
        dur(
            &t.connect_timeout,
            "target.connect_timeout",
            &mut d.connect_timeout,
        )?;
        if d.connect_timeout.is_zero() {
            return self.err(
                t.connect_timeout.as_ref().map_or(0..0, |s| s.span()),
                "target.connect_timeout",
                "must be greater than zero",
            );
        }
        if let Some(n) = t.connect_retries {
            d.connect_retries = n;
        }
        if let Some(c) = t.tls_chain_cache {
            d.tls_chain_cache = c;
        }
        if let Some(sa) = &t.source_addrs {
            d.source_addrs = self.source_addrs(sa)?;
        }
        if d.device_timeout.is_zero() {
            return self.err(
                t.device_timeout.as_ref().map_or(0..0, |s| s.span()),
                "target.device_timeout",
                "must be greater than zero",
            );
        }
        if d.poll_floor > d.poll_cap {
            return self.err(
                t.poll_floor.as_ref().map_or(0..0, |s| s.span()),
                "target.poll_floor",
                "must not exceed target.poll_cap",
            );
        }
        if let Some(v) = t.verify_twins {
            d.verify_twins = v;
        }
        if let Some(r) = &t.twin_rate {
            if !(*r.get_ref() > 0.0 && r.get_ref().is_finite()) {
                return self.err(
                    r.span(),
                    "target.twin_rate",
                    "twin reads per second: a positive number",
                );
            }
            d.twin_rate = *r.get_ref();
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;

    use super::*;
    use crate::scenario::validate::tests::MIN;
    use crate::scenario::{Scenario, WebhookTransport};

    fn with_target(lines: &str) -> Result<Scenario> {
        let text = MIN.replacen(
            "[enrollment]",
            &format!("[target]\n{lines}\n[enrollment]"),
            1,
        );
        Scenario::parse(Path::new("s.toml"), &text)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_chain_cache_is_on_unless_turned_off() {
        assert!(
            with_target("mode = \"mqtt\"")
                .unwrap()
                .target
                .device
                .tls_chain_cache
        );
        let off = with_target("mode = \"mqtt\"\ntls_chain_cache = false").unwrap();
        assert!(!off.target.device.tls_chain_cache);
        let e = with_target("mode = \"mqtt\"\ntls_chain_cache = 1").unwrap_err();
        assert!(e.to_string().contains("tls_chain_cache"), "{e}");
    }

    #[test]
    fn source_addresses_default_to_sixteen_on_loopback_only() {
        let s = with_target("mode = \"mqtt\"").unwrap();
        let d = &s.target.device;
        assert_eq!(d.source_addrs, SourceAddrs::Auto);
        let spread = d.source_addrs.for_destination(ip("127.0.0.1"));
        assert_eq!(spread.len(), 16);
        assert_eq!((spread[0], spread[15]), (ip("127.0.0.1"), ip("127.0.0.16")));
        assert!(d.source_addrs.for_destination(ip("20.1.2.3")).is_empty());
        assert!(d.source_addrs.for_destination(ip("::1")).is_empty());
        assert_eq!(d.connect_timeout, Duration::from_secs(10));
        assert_eq!(d.connect_retries, 0);
        assert_eq!(s.emulator.webhook, WebhookTransport::InProcess);
    }

    #[test]
    fn source_addresses_as_a_count_a_list_or_off() {
        let count = with_target("source_addrs = 300").unwrap();
        let spread = count
            .target
            .device
            .source_addrs
            .for_destination(ip("127.0.0.1"));
        assert_eq!(spread.len(), 300);
        assert_eq!(spread[299], ip("127.0.1.44"));
        let list = with_target("source_addrs = [\"127.0.0.2\", \"::1\"]").unwrap();
        let d = &list.target.device;
        assert_eq!(
            d.source_addrs.for_destination(ip("127.0.0.1")),
            [ip("127.0.0.2")]
        );
        assert_eq!(d.source_addrs.for_destination(ip("::1")), [ip("::1")]);
        for off in [
            "source_addrs = false",
            "source_addrs = 1",
            "source_addrs = []",
        ] {
            let s = with_target(off).unwrap();
            assert_eq!(s.target.device.source_addrs, SourceAddrs::Kernel, "{off}");
        }
        let r = with_target("connect_timeout = \"2s\"\nconnect_retries = 3").unwrap();
        assert_eq!(r.target.device.connect_timeout, Duration::from_secs(2));
        assert_eq!(r.target.device.connect_retries, 3);
    }

    #[test]
    fn bad_source_addresses_and_connect_settings_are_located() {
        for (line, want) in [
            (
                "source_addrs = [\"127.0.0.300\"]",
                "s.toml:4:16: target.source_addrs: `127.0.0.300` is not an IP address",
            ),
            (
                "source_addrs = -3",
                "s.toml:4:16: target.source_addrs: -3: a count of loopback addresses is 0 to 65534",
            ),
            (
                "connect_timeout = \"0s\"",
                "s.toml:4:19: target.connect_timeout: must be greater than zero",
            ),
        ] {
            let e = with_target(line).unwrap_err().to_string();
            assert!(e.starts_with(want), "{line}: {e}");
        }
        let text = MIN.to_owned() + "[emulator]\nwebhook = \"grpc\"\n";
        let e = Scenario::parse(Path::new("s.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("emulator.webhook: `grpc`: choose \"in-process\" or \"http\""),
            "{e}"
        );
    }
}
