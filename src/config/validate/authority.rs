//! A cluster's `authority:` and `on_authority_lost:`, and its backends' `patroni_member`.
//! Each kind of authority is one key of `authority:`; exactly one must be set.

use std::collections::HashMap;

use super::coordination::etcd;
use super::{Checked, Problem, Validator};
use crate::config::raw::{RawAuthority, RawCluster, RawEtcd, RawPatroni};
use crate::config::{Authority, OnAuthorityLost, PatroniConfig, Protocol};

/// Patroni's own default `namespace`.
const PATRONI_NAMESPACE: &str = "/service";

/// The cluster's authority (if any) and its `on_authority_lost`, with every misuse reported:
/// keys that mean nothing without an authority, a `tcp` cluster (no roles to agree on),
/// two members with one name.
pub(super) fn authority(
    v: &mut Validator<'_>,
    path: &str,
    raw: &RawCluster,
    protocol: Option<Protocol>,
) -> Checked<(Option<Authority>, OnAuthorityLost)> {
    let on_lost = raw
        .on_authority_lost
        .map_or(OnAuthorityLost::default(), Into::into);
    let authority = match &raw.authority {
        None => Ok(None),
        Some(a) => one_of(v, &format!("{path}.authority"), a).map(Some),
    };
    // An invalid authority is reported already: its members are not judged against it.
    let members = match &authority {
        Ok(a) => patroni_members(v, path, raw, matches!(a, Some(Authority::Patroni(_)))),
        Err(_) => Ok(()),
    };
    if raw.authority.is_none() && raw.on_authority_lost.is_some() {
        return Err(v.report(
            format!("{path}.on_authority_lost"),
            Problem::new("on_authority_lost is set but the cluster has no authority")
                .hint("add authority: { patroni: ... }, or remove on_authority_lost"),
        ));
    }
    let sentinel = raw.authority.as_ref().is_some_and(|a| a.sentinel.is_some());
    if sentinel && protocol.is_some_and(|p| p != Protocol::Redis) {
        return Err(v.report(
            format!("{path}.authority.sentinel"),
            Problem::new("Redis Sentinel is the authority of a Redis cluster only")
                .hint("set protocol: redis, or use another authority"),
        ));
    }
    if raw.authority.is_some() && protocol == Some(Protocol::Tcp) {
        return Err(v.report(
            format!("{path}.authority"),
            Problem::new("a tcp cluster has no roles for an authority to confirm")
                .hint("set protocol: postgres, mysql or redis, or remove authority"),
        ));
    }
    members?;
    Ok((authority?, on_lost))
}

fn one_of(v: &mut Validator<'_>, path: &str, raw: &RawAuthority) -> Checked<Authority> {
    match (&raw.patroni, &raw.sentinel) {
        (Some(_), Some(_)) => Err(v.report(
            format!("{path}.sentinel"),
            Problem::new("patroni and sentinel are alternatives; a cluster has one authority"),
        )),
        (Some(p), None) => patroni(v, &format!("{path}.patroni"), p).map(Authority::Patroni),
        (None, Some(s)) => {
            super::sentinel::sentinel(v, &format!("{path}.sentinel"), s).map(Authority::Sentinel)
        }
        (None, None) => Err(v.report(
            path,
            Problem::new("the authority names no kind").hint(
                "write authority: { patroni: { etcd: ..., namespace: ..., scope: ... } } or \
                 authority: { sentinel: { addresses: [...], master_name: ... } }",
            ),
        )),
    }
}

fn patroni(v: &mut Validator<'_>, path: &str, raw: &RawPatroni) -> Checked<PatroniConfig> {
    let default = RawEtcd::default();
    let etcd = etcd(
        &format!("{path}.etcd"),
        raw.etcd.as_ref().unwrap_or(&default),
        raw.etcd.is_none(),
        v,
    );
    let namespace = namespace(v, path, raw.namespace.as_deref());
    let scope = match raw.scope.as_deref() {
        Some(s) if key_segment(s) => Ok(s.to_string()),
        Some(s) => Err(v.report(
            format!("{path}.scope"),
            Problem::new(format!("scope {s:?} is not a Patroni cluster name"))
                .hint("write the `scope` of Patroni's config, without slashes or spaces"),
        )),
        None => Err(v.report(
            format!("{path}.scope"),
            Problem::new("the Patroni authority has no scope")
                .hint("write the `scope` of Patroni's config, e.g. scope: batman"),
        )),
    };
    Ok(PatroniConfig {
        etcd: etcd?,
        namespace: namespace?,
        scope: scope?,
    })
}

/// Patroni joins `/`, the namespace and the scope and collapses repeated slashes.
fn namespace(v: &mut Validator<'_>, path: &str, raw: Option<&str>) -> Checked<String> {
    let text = raw.unwrap_or(PATRONI_NAMESPACE);
    let parts: Vec<&str> = text.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().all(|p| key_segment(p)) {
        return Ok(parts.iter().map(|p| format!("/{p}")).collect());
    }
    Err(v.report(
        format!("{path}.namespace"),
        Problem::new(format!("namespace {text:?} is not a key path"))
            .hint("write the `namespace` of Patroni's config, e.g. namespace: /service"),
    ))
}

fn key_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.contains(char::is_whitespace)
}

/// Each backend's `patroni_member`: only with a Patroni authority, never empty, and no two
/// backends (by explicit member or by name) standing for the same member.
fn patroni_members(
    v: &mut Validator<'_>,
    path: &str,
    raw: &RawCluster,
    patroni: bool,
) -> Checked<()> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut result = Ok(());
    for (i, b) in raw.backends.iter().enumerate() {
        let field = format!("{path}.backends[{i}].patroni_member");
        let Some(member) = b.patroni_member.as_deref().or(b.name.as_deref()) else {
            continue;
        };
        if b.patroni_member.is_some() && !patroni {
            result = Err(v.report(
                field,
                Problem::new("patroni_member is set but the cluster has no Patroni authority")
                    .hint("add authority: { patroni: ... } to the cluster, or remove it"),
            ));
            continue;
        }
        if member.trim().is_empty() {
            result = Err(v.report(field, Problem::new("patroni_member is empty")));
            continue;
        }
        if !patroni {
            continue;
        }
        if let Some(first) = seen.insert(member, i) {
            result = Err(v.report(
                field,
                Problem::new(format!(
                    "Patroni member {member:?} is already backends[{first}] of this cluster"
                ))
                .hint("each backend stands for a different Patroni member"),
            ));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use crate::config::{Authority, Config, OnAuthorityLost};

    fn cluster(extra: &str, backends: &str) -> String {
        format!(
            "clusters:\n  - name: c\n    protocol: postgres\n    check: {{ user: m }}\n{extra}    backends:\n{backends}listeners:\n  - {{ name: l, bind: 127.0.0.1:0, cluster: c }}\n"
        )
    }

    const TWO: &str = "      - { name: a, address: 127.0.0.1:1 }\n      - { name: b, address: 127.0.0.1:2, patroni_member: pg-b }\n";

    fn load(text: &str) -> Result<Config, String> {
        Config::from_yaml_str_with_env(text, None, &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_means_checks_alone() {
        let c = load(&cluster("", "      - { name: a, address: 127.0.0.1:1 }\n")).unwrap();
        assert_eq!(c.clusters[0].authority, None);
        assert_eq!(
            c.clusters[0].on_authority_lost,
            OnAuthorityLost::TrustChecks
        );
    }

    #[test]
    fn a_patroni_authority_loads_with_its_defaults() {
        let text = cluster(
            "    authority:\n      patroni:\n        etcd: { endpoints: [http://127.0.0.1:2379/] }\n        scope: batman\n",
            TWO,
        );
        let c = load(&text).unwrap();
        let Some(Authority::Patroni(p)) = &c.clusters[0].authority else {
            panic!("no patroni authority: {:?}", c.clusters[0].authority)
        };
        assert_eq!(p.etcd.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(p.leader_key(), "/service/batman/leader");
        assert_eq!(p.failover_key(), "/service/batman/failover");
        assert_eq!(c.clusters[0].backends[0].patroni_member, None);
        assert_eq!(
            c.clusters[0].backends[1].patroni_member.as_deref(),
            Some("pg-b")
        );
        let text = cluster(
            "    authority:\n      patroni:\n        etcd: { endpoints: [http://e:2379] }\n        namespace: /rolegate-lab//\n        scope: s\n    on_authority_lost: fail_closed\n",
            TWO,
        );
        let c = load(&text).unwrap();
        let Some(Authority::Patroni(p)) = &c.clusters[0].authority else {
            panic!()
        };
        assert_eq!(p.leader_key(), "/rolegate-lab/s/leader");
        assert_eq!(c.clusters[0].on_authority_lost, OnAuthorityLost::FailClosed);
        let root = cluster(
            "    authority: { patroni: { etcd: { endpoints: [http://e:2379] }, namespace: /, scope: s } }\n",
            TWO,
        );
        let c = load(&root).unwrap();
        let Some(Authority::Patroni(p)) = &c.clusters[0].authority else {
            panic!()
        };
        assert_eq!(p.leader_key(), "/s/leader");
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let etcd = "etcd: { endpoints: [http://e:2379] }";
        let cases = [
            (
                cluster("    authority: { patroni: { scope: s } }\n", TWO),
                "clusters[0].authority.patroni.etcd.endpoints",
            ),
            (
                cluster(
                    "    authority: { patroni: { etcd: { endpoints: [e:2379] }, scope: s } }\n",
                    TWO,
                ),
                "clusters[0].authority.patroni.etcd.endpoints[0]",
            ),
            (
                cluster(&format!("    authority: {{ patroni: {{ {etcd} }} }}\n"), TWO),
                "clusters[0].authority.patroni.scope",
            ),
            (
                cluster(
                    &format!("    authority: {{ patroni: {{ {etcd}, scope: 'a b' }} }}\n"),
                    TWO,
                ),
                "clusters[0].authority.patroni.scope",
            ),
            (
                cluster(
                    &format!(
                        "    authority: {{ patroni: {{ {etcd}, scope: s, namespace: 'a b' }} }}\n"
                    ),
                    TWO,
                ),
                "clusters[0].authority.patroni.namespace",
            ),
            (
                cluster("    authority: {}\n", TWO),
                "clusters[0].authority",
            ),
            (
                cluster("    on_authority_lost: fail_closed\n", TWO),
                "clusters[0].on_authority_lost",
            ),
            (
                cluster("", TWO),
                "clusters[0].backends[1].patroni_member",
            ),
            (
                cluster(
                    &format!("    authority: {{ patroni: {{ {etcd}, scope: s }} }}\n"),
                    "      - { name: a, address: 127.0.0.1:1 }\n      - { name: b, address: 127.0.0.1:2, patroni_member: a }\n",
                ),
                "clusters[0].backends[1].patroni_member",
            ),
            (
                cluster(
                    &format!("    authority: {{ patroni: {{ {etcd}, scope: s }} }}\n"),
                    TWO,
                )
                .replace("protocol: postgres", "protocol: tcp"),
                "clusters[0].authority",
            ),
            (
                cluster("    on_authority_lost: sometimes\n", TWO),
                "on_authority_lost",
            ),
        ];
        for (text, field) in cases {
            let err = load(&text).expect_err(&text);
            assert!(
                err.contains(field),
                "{text}: error does not name {field}: {err}"
            );
        }
    }
}
