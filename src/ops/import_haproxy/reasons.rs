//! Why a construct has no rolegate equivalent: one sentence per HAProxy keyword, so that every
//! untranslated line on stderr says what to do instead rather than only "unsupported".

/// The reason for a proxy-level keyword (`listen`, `frontend`, `backend`, `defaults`).
pub(super) fn proxy(keyword: &str) -> &'static str {
    match keyword {
        "acl" | "use_backend" | "use-server" | "tcp-request" | "tcp-response" | "http-request"
        | "http-response" | "http-after-response" | "redirect" => {
            "rolegate routes by listener and database role, not by rules; give each route its own listener"
        }
        "stick-table" | "stick" | "persist" | "force-persist" | "ignore-persist" | "cookie"
        | "hash-type" | "hash-balance-factor" => {
            "rolegate has no session persistence: the database role decides where a connection goes"
        }
        "log" | "log-format" | "error-log-format" | "log-tag" | "unique-id-format"
        | "unique-id-header" | "capture" | "log-format-sd" => {
            "rolegate writes one line per session and per role change itself (log.format, log.level, log.session_level)"
        }
        "errorfile" | "errorloc" | "errorloc302" | "errorloc303" | "errorfiles"
        | "compression" | "monitor-uri" | "monitor" | "http-reuse" | "http-check" | "filter" => {
            "HTTP-only: rolegate is a TCP proxy"
        }
        "stats" => "rolegate's admin API serves /metrics and /status on admin.listen (127.0.0.1:9813)",
        "fullconn" | "minconn" | "maxqueue" | "rate-limit" => {
            "rolegate limits connections per listener only (max_connections)"
        }
        "source" | "usesrc" | "dispatch" | "transparent" => {
            "rolegate connects from the host's own address to the configured backends"
        }
        "server-template" => {
            "rolegate needs each backend by name and address; list the servers one per line"
        }
        "email-alert" => "alert on rolegate's metrics instead (README: Alerts worth having)",
        "external-check" => "rolegate asks the database itself and runs no check scripts",
        "bind-process" | "process" => "rolegate runs one process with `workers` threads",
        _ => "no rolegate equivalent",
    }
}

/// The reason for a `global` keyword.
pub(super) fn global(keyword: &str) -> &'static str {
    match keyword {
        "chroot" | "user" | "group" | "uid" | "gid" | "daemon" | "pidfile" | "master-worker"
        | "ulimit-n" | "hard-stop-after" | "node" | "set-dumpable" | "setenv" | "presetenv"
        | "resetenv" | "unsetenv" | "expose-experimental-directives" | "insecure-fork-wanted" => {
            "process management: run rolegate under systemd (README: Deploying; the unit sets user, limits and stop timeout)"
        }
        "log" | "log-send-hostname" | "log-tag" => {
            "rolegate logs to stderr (log.format, log.level); journald or the container runtime collects it"
        }
        "stats" => "rolegate's admin API (admin.listen) replaces the stats socket: /status, /metrics and POST actions",
        "nbproc" | "cpu-map" | "thread-groups" => {
            "rolegate runs one process; set workers for its data-plane threads"
        }
        "maxconn" | "maxconnrate" | "maxsessrate" | "maxpipes" => {
            "rolegate limits connections per listener (max_connections) and by the descriptor budget"
        }
        k if k.starts_with("ssl-") || k == "ca-base" || k == "crt-base" => {
            "rolegate terminates no TLS: database clients negotiate TLS with the database through it"
        }
        k if k.starts_with("tune.") => "HAProxy tuning; rolegate's buffers and splice pipes size themselves",
        "lua-load" | "lua-prepend-path" => "rolegate runs no scripts",
        _ => "no rolegate equivalent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_its_own_reason() {
        assert!(proxy("acl").contains("by listener"));
        assert!(proxy("stats").contains("admin"));
        assert!(global("chroot").contains("systemd"));
        assert!(global("ssl-default-bind-ciphers").contains("TLS"));
        assert!(global("tune.bufsize").contains("tuning"));
        assert_eq!(proxy("frobnicate"), "no rolegate equivalent");
    }
}
