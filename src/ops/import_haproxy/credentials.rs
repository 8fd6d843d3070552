//! The login rolegate's checks need and HAProxy's did not. PostgreSQL and MySQL checks log in:
//! they get the user HAProxy named (`mysql-check user`, `pgsql-check user`) or the placeholder
//! `rolegate_monitor`, and `password_env: ROLEGATE_<CLUSTER>_PASSWORD`. A Redis `tcp-check send
//! AUTH` password is never copied into the file: it moves to such a variable. Each variable is
//! listed at the top of the output and named on stderr at the line of the check.

use super::detect::Detected;
use super::model::{noted, Cluster, Placeholder, Protocol};
use super::values;
use super::Notes;

/// The login rolegate's check needs and HAProxy's did not: a placeholder user and a
/// `password_env` for PostgreSQL and MySQL; for Redis, the password of a `tcp-check` AUTH.
pub(super) fn add(
    cluster: &mut Cluster,
    detected: &Detected,
    placeholders: &mut Vec<Placeholder>,
    notes: &mut Notes,
) {
    let protocol = cluster.settings.protocol;
    let check = &mut cluster.settings.check;
    let name = cluster.name.clone();
    let mut env = values::password_env(&name);
    // `pg-a` and `pg_a` are two clusters but would be one variable.
    let stem = env.clone();
    let mut n = 2;
    while placeholders.iter().any(|p| p.env == env) {
        env = stem.replace("_PASSWORD", &format!("_{n}_PASSWORD"));
        n += 1;
    }
    let line = if detected.line > 0 { detected.line } else { 1 };
    match protocol {
        Protocol::Postgres | Protocol::Mysql => {
            let user = match &check.user {
                Some(user) => user.value.clone(),
                None => {
                    check.user = Some(noted(
                        "rolegate_monitor".to_string(),
                        "placeholder: the account rolegate's checks log in as; create it",
                    ));
                    "rolegate_monitor".to_string()
                }
            };
            let grant = match protocol {
                Protocol::Postgres => "grant it pg_monitor so that it can read replica lag",
                _ => "grant it REPLICATION CLIENT, and SLAVE MONITOR on MariaDB 10.5.9 and later, so that it can read replica lag",
            };
            notes.add(line, format!("cluster {name}: HAProxy's check logged in with no password; rolegate's {} check logs in as {user:?}: set {env} to its password ({grant})", protocol.as_str()));
            check.password_env = Some(noted(env.clone(), "placeholder: set this variable"));
            placeholders.push(Placeholder {
                env,
                what: format!("password of {user} for the checks of cluster {name}"),
            });
        }
        Protocol::Redis if detected.auth_line.is_some() => {
            let at = detected.auth_line.unwrap_or(line);
            notes.add(at, format!("tcp-check send AUTH: the password is not copied into the config; set {env} to it"));
            check.password_env = Some(noted(
                env.clone(),
                format!("the password of tcp-check send AUTH (line {at})"),
            ));
            placeholders.push(Placeholder {
                env,
                what: format!("the Redis password of cluster {name}"),
            });
        }
        _ => {}
    }
}
