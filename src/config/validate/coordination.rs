//! `coordination:` (fleet mode): etcd endpoints and credentials, the key prefix, this
//! instance's name and mode, the observer count, the lease and the `on_lost` policy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Checked, Problem, Validator};
use crate::config::raw::{RawCoordination, RawEtcd, RawEtcdTls};
use crate::config::{CoordinationConfig, EtcdConfig, EtcdTls, FleetMode, OnLost};

/// `lease_ttl` when omitted: a dead observer's slot frees within it.
const LEASE_TTL: Duration = Duration::from_secs(3);
/// etcd grants leases in whole seconds and refuses TTLs it cannot keep (its minimum is
/// derived from the election timeout, about 2 s on a default cluster).
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
const MAX_OBSERVERS: u32 = 64;

pub(super) fn coordination(
    raw: &RawCoordination,
    v: &mut Validator<'_>,
) -> Checked<CoordinationConfig> {
    let default = RawEtcd::default();
    let etcd = etcd(
        "coordination.etcd",
        raw.etcd.as_ref().unwrap_or(&default),
        raw.etcd.is_none(),
        v,
    );
    let prefix = prefix(raw.prefix.as_deref(), v);
    let instance = instance(raw.instance.as_deref(), v);
    let observers = match raw.observers {
        None => Ok(2),
        Some(n) if (1..=MAX_OBSERVERS).contains(&n) => Ok(n),
        Some(n) => Err(v.report(
            "coordination.observers",
            Problem::new(format!("observers {n} is outside 1..={MAX_OBSERVERS}"))
                .hint("2 gives one standby that needs no warm-up"),
        )),
    };
    let lease_ttl = lease_ttl(raw.lease_ttl.as_deref(), v);
    Ok(CoordinationConfig {
        etcd: etcd?,
        prefix: prefix?,
        instance: instance?,
        mode: raw.mode.map_or(FleetMode::Auto, Into::into),
        observers: observers?,
        lease_ttl: lease_ttl?,
        on_lost: raw.on_lost.map_or(OnLost::Local, Into::into),
    })
}

/// An etcd client block at `path` (`coordination.etcd`, `clusters[0].authority.patroni.etcd`):
/// endpoints, TLS and credentials. `missing`: the block was not written at all.
pub(super) fn etcd(
    path: &str,
    raw: &RawEtcd,
    missing: bool,
    v: &mut Validator<'_>,
) -> Checked<EtcdConfig> {
    if missing || raw.endpoints.is_empty() {
        return Err(v.report(
            format!("{path}.endpoints"),
            Problem::new(format!("{path} needs at least one etcd endpoint"))
                .hint("e.g. endpoints: [http://127.0.0.1:2379]"),
        ));
    }
    let mut endpoints = Vec::with_capacity(raw.endpoints.len());
    let mut bad = None;
    for (i, e) in raw.endpoints.iter().enumerate() {
        match endpoint(e) {
            Ok(()) => endpoints.push(e.trim_end_matches('/').to_string()),
            Err(problem) => bad = Some(v.report(format!("{path}.endpoints[{i}]"), problem)),
        }
    }
    let tls = raw.tls.as_ref().map(|t| tls(path, t, v)).transpose();
    let password = v.secret(
        path,
        &[
            ("password_env", raw.password_env.as_deref()),
            ("password_file", raw.password_file.as_deref()),
        ],
    );
    let user_path = format!("{path}.user");
    let user = match (&raw.user, &password) {
        (Some(u), _) if u.trim().is_empty() => {
            Err(v.report(user_path, Problem::new("the etcd user is empty")))
        }
        (None, Ok(Some(_))) => Err(v.report(
            user_path,
            Problem::new("an etcd password is set but no user").hint(format!("set {path}.user")),
        )),
        (Some(_), Ok(None)) => Err(v.report(
            user_path,
            Problem::new("an etcd user is set but no password")
                .hint(format!("set {path}.password_env or password_file")),
        )),
        (u, _) => Ok(u.clone()),
    };
    if let Some(reported) = bad {
        return Err(reported);
    }
    Ok(EtcdConfig {
        endpoints,
        tls: tls?,
        user: user?,
        password: password?,
    })
}

fn endpoint(text: &str) -> Result<(), Problem> {
    let hint = "write it as http://HOST:PORT or https://HOST:PORT";
    let Some(rest) = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
    else {
        return Err(Problem::new(format!("{text:?} has no http:// or https:// scheme")).hint(hint));
    };
    let hostport = rest.trim_end_matches('/');
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(Problem::new(format!("{text:?} has no HOST:PORT")).hint(hint)),
    }
}

fn tls(path: &str, raw: &RawEtcdTls, v: &mut Validator<'_>) -> Checked<EtcdTls> {
    let base = v.base_dir.map(Path::to_path_buf);
    let mut file = |key: &str, value: Option<&str>| -> Checked<Option<PathBuf>> {
        let Some(value) = value else { return Ok(None) };
        let file = match &base {
            Some(dir) => dir.join(value),
            None => PathBuf::from(value),
        };
        if !file.is_file() {
            return Err(v.report(
                format!("{path}.tls.{key}"),
                Problem::new(format!("{} is not a readable file", file.display())),
            ));
        }
        Ok(Some(file))
    };
    let ca_file = file("ca_file", raw.ca_file.as_deref());
    let cert_file = file("cert_file", raw.cert_file.as_deref());
    let key_file = file("key_file", raw.key_file.as_deref());
    let (ca_file, cert_file, key_file) = (ca_file?, cert_file?, key_file?);
    if cert_file.is_some() != key_file.is_some() {
        let missing = if cert_file.is_some() {
            "key_file"
        } else {
            "cert_file"
        };
        return Err(v.report(
            format!("{path}.tls.{missing}"),
            Problem::new("a client certificate needs both cert_file and key_file"),
        ));
    }
    Ok(EtcdTls {
        ca_file,
        cert_file,
        key_file,
    })
}

fn prefix(raw: Option<&str>, v: &mut Validator<'_>) -> Checked<String> {
    let text = raw.unwrap_or("/rolegate");
    let trimmed = text.trim_end_matches('/');
    if !trimmed.starts_with('/') || trimmed.len() < 2 || trimmed.contains(char::is_whitespace) {
        return Err(v.report(
            "coordination.prefix",
            Problem::new(format!("prefix {text:?} is not an absolute key path"))
                .hint("e.g. prefix: /rolegate/prod"),
        ));
    }
    Ok(trimmed.to_string())
}

fn instance(raw: Option<&str>, v: &mut Validator<'_>) -> Checked<String> {
    let name = match raw {
        Some(n) => n.to_string(),
        None => hostname(),
    };
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(v.report(
            "coordination.instance",
            Problem::new(format!(
                "instance {name:?} must be 1–253 characters of letters, digits, '-', '_' or '.'"
            ))
            .hint("it names this instance's keys in etcd; it must be unique in the fleet"),
        ));
    }
    Ok(name)
}

/// The host name, as the kernel reports it (no libc call, no unsafe).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn lease_ttl(raw: Option<&str>, v: &mut Validator<'_>) -> Checked<Duration> {
    let ttl = v
        .duration("coordination.lease_ttl", raw)?
        .unwrap_or(LEASE_TTL);
    if ttl < MIN_LEASE_TTL || ttl.subsec_nanos() != 0 {
        return Err(v.report(
            "coordination.lease_ttl",
            Problem::new(format!(
                "lease_ttl {} must be whole seconds, at least {}",
                humantime::format_duration(ttl),
                humantime::format_duration(MIN_LEASE_TTL)
            ))
            .hint("etcd grants leases in whole seconds; 3s is a good start"),
        ));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, FleetMode, OnLost};

    const BASE: &str = "clusters:\n  - name: c\n    protocol: tcp\n    backends:\n      - { name: a, address: 127.0.0.1:1 }\nlisteners:\n  - { name: l, bind: 127.0.0.1:0, cluster: c }\n";

    fn load(coordination: &str) -> Result<Config, String> {
        let text = format!("{BASE}{coordination}");
        Config::from_yaml_str_with_env(&text, None, &|name| {
            (name == "ETCD_PW").then(|| "pw".to_string())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn absent_means_standalone() {
        assert!(load("").unwrap().coordination.is_none());
    }

    #[test]
    fn the_issue_example_loads_with_its_defaults() {
        let c = load(
            "coordination:\n  etcd:\n    endpoints: [http://127.0.0.1:2379, http://127.0.0.1:2381]\n    user: rolegate\n    password_env: ETCD_PW\n  prefix: /rolegate/prod/\n  instance: app-1\n  mode: follower\n  observers: 3\n  lease_ttl: 5s\n  on_lost: last_known\n",
        )
        .unwrap()
        .coordination
        .unwrap();
        assert_eq!(c.etcd.endpoints.len(), 2);
        assert_eq!(c.etcd.user.as_deref(), Some("rolegate"));
        assert!(c.etcd.password.is_some());
        assert_eq!(c.prefix, "/rolegate/prod");
        assert_eq!(c.instance, "app-1");
        assert_eq!(c.mode, FleetMode::Follower);
        assert_eq!(c.observers, 3);
        assert_eq!(c.lease_ttl.as_secs(), 5);
        assert_eq!(c.on_lost, OnLost::LastKnown);
        let d = load("coordination:\n  etcd: { endpoints: [http://e:2379] }\n")
            .unwrap()
            .coordination
            .unwrap();
        assert_eq!(
            (d.mode, d.observers, d.lease_ttl.as_secs(), d.on_lost),
            (FleetMode::Auto, 2, 3, OnLost::Local)
        );
        assert!(!d.instance.is_empty(), "defaults to the host name");
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let cases = [
            ("coordination:\n  prefix: /x\n", "coordination.etcd.endpoints"),
            (
                "coordination:\n  etcd: { endpoints: [127.0.0.1:2379] }\n",
                "coordination.etcd.endpoints[0]",
            ),
            (
                "coordination:\n  etcd: { endpoints: [http://e:2379] }\n  prefix: rolegate\n",
                "coordination.prefix",
            ),
            (
                "coordination:\n  etcd: { endpoints: [http://e:2379] }\n  observers: 0\n",
                "coordination.observers",
            ),
            (
                "coordination:\n  etcd: { endpoints: [http://e:2379] }\n  lease_ttl: 1500ms\n",
                "coordination.lease_ttl",
            ),
            (
                "coordination:\n  etcd: { endpoints: [http://e:2379] }\n  instance: 'a b'\n",
                "coordination.instance",
            ),
            (
                "coordination:\n  etcd: { endpoints: [http://e:2379], password_env: ETCD_PW }\n",
                "coordination.etcd.user",
            ),
            (
                "coordination:\n  etcd: { endpoints: [http://e:2379], tls: { ca_file: /nonexistent/ca.pem } }\n",
                "coordination.etcd.tls.ca_file",
            ),
            (
                "coordination:\n  etcd: { endpoints: [http://e:2379] }\n  mode: leader\n",
                "mode",
            ),
        ];
        for (text, field) in cases {
            let err = load(text).expect_err(text);
            assert!(
                err.contains(field),
                "{text}: error does not name {field}: {err}"
            );
        }
    }
}
