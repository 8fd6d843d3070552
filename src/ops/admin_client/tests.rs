use super::*;
use std::net::TcpListener;

fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

#[test]
fn wildcard_listen_is_reached_on_loopback() {
    assert_eq!(
        url_for("0.0.0.0:9813".parse().unwrap()),
        "http://127.0.0.1:9813"
    );
    assert_eq!(url_for("[::]:9".parse().unwrap()), "http://[::1]:9");
    assert_eq!(
        url_for("10.0.0.5:9813".parse().unwrap()),
        "http://10.0.0.5:9813"
    );
}

#[test]
fn admin_urls_are_normalized_or_refused() {
    assert_eq!(normalize_url("127.0.0.1:1/").unwrap(), "http://127.0.0.1:1");
    assert_eq!(normalize_url("http://h:2").unwrap(), "http://h:2");
    assert!(normalize_url("https://h:2").is_err());
    assert!(normalize_url("h:0").is_err());
}

#[test]
fn names_the_server_cannot_have_are_refused_before_sending() {
    let client = AdminClient::resolve(&options()).unwrap();
    for (c, b) in [("pg", "a/b"), ("", "a"), ("pg", "a b"), ("p?g", "a")] {
        let err = client.backend_action(c, b, "drain").unwrap_err();
        assert_eq!(err.exit_code(), EXIT_USAGE, "{err}");
    }
}

#[test]
fn config_gives_url_and_token_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "from-config\n").unwrap();
    std::fs::write(dir.path().join("other"), "from-flag\n").unwrap();
    // A check password from a variable the client's environment lacks must not matter.
    let file = dir.path().join("rolegate.yaml");
    std::fs::write(
        &file,
        "admin: { listen: 0.0.0.0:9999, token_file: token }
clusters: [{ name: c, protocol: postgres, check: { user: u, password_env: ROLEGATE_TEST_UNSET_VAR },
         backends: [{ name: a, address: 127.0.0.1:1 }] }]
listeners: [{ name: l, bind: 127.0.0.1:0, cluster: c }]
",
    )
    .unwrap();
    let mut opts = options();
    opts.config = Some(file.clone());
    let client = AdminClient::resolve(&opts).unwrap();
    assert_eq!(client.base(), "http://127.0.0.1:9999");
    assert_eq!(
        client.token.as_ref().unwrap().as_ref().unwrap().expose(),
        "from-config"
    );
    let source = client.token_source.clone().unwrap();
    assert!(
        source.starts_with("admin.token_file (token) of "),
        "{source}"
    );

    opts.admin = Some("127.0.0.1:1234".into());
    opts.token_file = Some(dir.path().join("other"));
    let client = AdminClient::resolve(&opts).unwrap();
    assert_eq!(client.base(), "http://127.0.0.1:1234");
    assert_eq!(
        client.token.as_ref().unwrap().as_ref().unwrap().expose(),
        "from-flag"
    );
    assert!(!format!("{client:?}").contains("from-flag"));

    opts.token_file = Some(dir.path().join("missing"));
    let err = AdminClient::resolve(&opts).unwrap_err();
    assert!(
        err.to_string().contains("--token-file: cannot read"),
        "{err}"
    );
}

#[test]
fn a_broken_or_disabled_config_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, "admin: { listen: nowhere }\n").unwrap();
    let opts = ClientOptions {
        config: Some(file.clone()),
        ..options()
    };
    let err = AdminClient::resolve(&opts).unwrap_err();
    assert_eq!(err.exit_code(), EXIT_USAGE);
    assert!(err.to_string().contains("admin.listen"), "{err}");
    std::fs::write(&file, "admin: { enabled: false }\n").unwrap();
    let err = AdminClient::resolve(&opts).unwrap_err();
    assert!(err.to_string().contains("disabled"), "{err}");
}

/// Answers one request with `answer`; returns the base URL and the request it got.
fn serve_once(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
    let (addr, handle) = crate::ops::test_http::serve_once(answer.as_bytes());
    (format!("http://{addr}"), handle)
}

fn client_for(base: String, token: Option<&str>) -> AdminClient {
    AdminClient {
        base,
        token: Ok(token.map(Secret::new)),
        token_source: token.map(|_| "--token-file /t".to_string()),
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn a_post_carries_the_bearer_token() {
    let (base, server) = serve_once("HTTP/1.0 200 OK\r\n\r\npg/a: drain\n");
    let answer = client_for(base, Some("tok"))
        .backend_action("pg", "a", "drain")
        .unwrap();
    assert_eq!(answer, "pg/a: drain");
    let request = server.join().unwrap();
    assert!(request.starts_with("POST /backends/pg/a/drain HTTP/1.0\r\n"));
    assert!(
        request.contains("\r\nAuthorization: Bearer tok\r\n"),
        "{request}"
    );
    assert!(request.contains("\r\nContent-Length: 0\r\n"), "{request}");
}

#[test]
fn refusals_name_the_backend_or_the_token_source() {
    let (base, _s) = serve_once("HTTP/1.0 404 Not Found\r\n\r\nno backend pg/x\n");
    let err = client_for(base, None)
        .backend_action("pg", "x", "drain")
        .unwrap_err();
    assert!(matches!(err, ClientError::UnknownBackend { .. }), "{err}");
    assert!(err.to_string().contains("unknown backend pg/x"), "{err}");
    assert_eq!(err.exit_code(), EXIT_REFUSED);

    let (base, _s) = serve_once("HTTP/1.0 401 Unauthorized\r\n\r\nwrong token\n");
    let err = client_for(base, Some("tok")).post("/reload").unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("the token from --token-file /t was refused"),
        "{shown}"
    );
    assert!(!shown.contains("tok was"), "{shown}");

    let (base, _s) = serve_once("HTTP/1.0 401 Unauthorized\r\n\r\nmissing\n");
    let err = client_for(base, None).post("/reload").unwrap_err();
    assert!(err.to_string().contains("no token was sent"), "{err}");
}

#[test]
fn a_closed_port_names_the_url() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let err = client_for(base.clone(), None).status().unwrap_err();
    assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach the admin API at {base}: ")),
        "{err}"
    );
}
