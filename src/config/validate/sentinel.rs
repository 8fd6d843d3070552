//! `authority.sentinel`: addresses, master name, credentials and the three durations.

use std::collections::HashSet;

use super::{address, Checked, Problem, Validator};
use crate::config::raw::RawSentinel;
use crate::config::SentinelConfig;

pub(super) fn sentinel(
    v: &mut Validator<'_>,
    path: &str,
    raw: &RawSentinel,
) -> Checked<SentinelConfig> {
    let addresses = addresses(v, path, &raw.addresses);
    let master_name = match raw.master_name.as_deref() {
        Some(n) if !n.is_empty() && !n.contains(char::is_whitespace) => Ok(n.to_string()),
        Some(n) => Err(v.report(
            format!("{path}.master_name"),
            Problem::new(format!("master_name {n:?} is empty or contains spaces"))
                .hint("write the name of `sentinel monitor <name> ...` in the Sentinels' config"),
        )),
        None => Err(v.report(
            format!("{path}.master_name"),
            Problem::new("the Sentinel authority has no master_name").hint(
                "write the name the Sentinels monitor the master under, e.g. master_name: mymaster",
            ),
        )),
    };
    let password = v.secret(
        path,
        &[
            ("password", raw.password.as_deref()),
            ("password_env", raw.password_env.as_deref()),
            ("password_file", raw.password_file.as_deref()),
        ],
    );
    let user = match (&raw.user, &password) {
        (Some(u), _) if u.trim().is_empty() => Err(v.report(
            format!("{path}.user"),
            Problem::new("the Sentinel user is empty"),
        )),
        (Some(_), Ok(None)) => Err(v.report(
            format!("{path}.user"),
            Problem::new("a Sentinel user is set but no password")
                .hint(format!("set {path}.password_env or password_file")),
        )),
        (u, _) => Ok(u.clone()),
    };
    let why = "every exchange with a Sentinel needs time to answer";
    let timeout = v
        .positive_duration(&format!("{path}.timeout"), raw.timeout.as_deref(), why)
        .map(|d| d.unwrap_or(SentinelConfig::DEFAULT_TIMEOUT));
    let why = "the quorum is asked again after each interval";
    let interval = v
        .positive_duration(&format!("{path}.interval"), raw.interval.as_deref(), why)
        .map(|d| d.unwrap_or(SentinelConfig::DEFAULT_INTERVAL));
    let why = "a hold of 0s would never hold";
    let hold_timeout = v
        .positive_duration(
            &format!("{path}.hold_timeout"),
            raw.hold_timeout.as_deref(),
            why,
        )
        .map(|d| d.unwrap_or(SentinelConfig::DEFAULT_HOLD_TIMEOUT));
    Ok(SentinelConfig {
        addresses: addresses?,
        master_name: master_name?,
        user: user?,
        password: password?,
        timeout: timeout?,
        interval: interval?,
        hold_timeout: hold_timeout?,
    })
}

fn addresses(
    v: &mut Validator<'_>,
    path: &str,
    raw: &[String],
) -> Checked<Vec<crate::config::BackendAddress>> {
    if raw.is_empty() {
        return Err(v.report(
            format!("{path}.addresses"),
            Problem::new("the Sentinel authority lists no Sentinel").hint(
                "list every Sentinel that monitors the master, e.g. addresses: [10.0.0.1:26379, \
                 10.0.0.2:26379, 10.0.0.3:26379]",
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    let mut bad = Ok(());
    for (i, text) in raw.iter().enumerate() {
        let field = format!("{path}.addresses[{i}]");
        match address::backend(text) {
            Ok(_) if !seen.insert(text.as_str()) => {
                bad = Err(v.report(
                    field,
                    Problem::new(format!("{text} is listed twice"))
                        .hint("a Sentinel listed twice would vote twice in the quorum"),
                ));
            }
            Ok(addr) => out.push(addr),
            Err(problem) => {
                bad = Err(v.report(field, problem.hint("write HOST:PORT, e.g. 127.0.0.1:26379")))
            }
        }
    }
    bad.map(|()| out)
}

#[cfg(test)]
mod tests {
    use crate::config::{Authority, Config};

    fn load(sentinel: &str) -> Result<Config, String> {
        let text = format!(
            "clusters:\n  - name: c\n    protocol: redis\n    backends:\n      - {{ name: a, address: 127.0.0.1:16379 }}\n    authority:\n      sentinel: {sentinel}\nlisteners:\n  - {{ name: l, bind: 127.0.0.1:0, cluster: c }}\n"
        );
        Config::from_yaml_str_with_env(&text, None, &|name| {
            (name == "SENTINEL_PW").then(|| "pw".to_string())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_keys_load_with_their_defaults() {
        let c = load("{ addresses: [127.0.0.1:26379, 'sentinel-2:26379'], master_name: mymaster }")
            .unwrap();
        let Some(Authority::Sentinel(s)) = &c.clusters[0].authority else {
            panic!("{:?}", c.clusters[0].authority)
        };
        assert_eq!(s.addresses.len(), 2);
        assert_eq!(s.master_name, "mymaster");
        assert_eq!((s.user.as_deref(), s.password.is_some()), (None, false));
        assert_eq!(s.timeout.as_secs(), 1);
        assert_eq!(s.interval.as_secs(), 1);
        assert_eq!(s.hold_timeout.as_secs(), 10);
        let c = load("{ addresses: [127.0.0.1:26379], master_name: m, user: rg, password_env: SENTINEL_PW, timeout: 250ms, interval: 2s, hold_timeout: 30s }").unwrap();
        let Some(Authority::Sentinel(s)) = &c.clusters[0].authority else {
            panic!()
        };
        assert_eq!(s.user.as_deref(), Some("rg"));
        assert_eq!(s.password.as_ref().map(|p| p.expose()), Some("pw"));
        assert_eq!(s.timeout.as_millis(), 250);
        assert_eq!(s.hold_timeout.as_secs(), 30);
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let f = "clusters[0].authority.sentinel";
        let cases = [
            ("{ master_name: m }".to_string(), format!("{f}.addresses")),
            (
                "{ addresses: [127.0.0.1:26379] }".into(),
                format!("{f}.master_name"),
            ),
            (
                "{ addresses: [127.0.0.1:26379], master_name: 'a b' }".into(),
                format!("{f}.master_name"),
            ),
            (
                "{ addresses: [nope], master_name: m }".into(),
                format!("{f}.addresses[0]"),
            ),
            (
                "{ addresses: [127.0.0.1:1, 127.0.0.1:1], master_name: m }".into(),
                format!("{f}.addresses[1]"),
            ),
            (
                "{ addresses: [127.0.0.1:1], master_name: m, user: u }".into(),
                format!("{f}.user"),
            ),
            (
                "{ addresses: [127.0.0.1:1], master_name: m, password_env: UNSET_VAR }".into(),
                format!("{f}.password_env"),
            ),
            (
                "{ addresses: [127.0.0.1:1], master_name: m, timeout: 0s }".into(),
                format!("{f}.timeout"),
            ),
            (
                "{ addresses: [127.0.0.1:1], master_name: m, interval: soon }".into(),
                format!("{f}.interval"),
            ),
            (
                "{ addresses: [127.0.0.1:1], master_name: m, hold_timeout: 0s }".into(),
                format!("{f}.hold_timeout"),
            ),
            (
                "{ addresses: [127.0.0.1:1], master_name: m, quorum: 2 }".into(),
                "quorum".into(),
            ),
        ];
        for (text, field) in cases {
            let err = load(&text).expect_err(&text);
            assert!(
                err.contains(&field),
                "{text}: error does not name {field}: {err}"
            );
        }
    }
}
