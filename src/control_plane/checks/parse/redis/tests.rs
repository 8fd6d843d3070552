//! `ROLE` replies of every shape, `INFO replication` texts and error replies.

use super::*;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[test]
fn role_master() {
    let reply = Value::Array(vec![
        bulk("master"),
        Value::Int(3129659),
        Value::Array(vec![Value::Array(vec![
            bulk("127.0.0.1"),
            bulk("9001"),
            bulk("3129242"),
        ])]),
    ]);
    assert_eq!(
        parse_role(&reply),
        Ok(ReplyRole::Master { offset: 3129659 })
    );
    let facts = facts(&ReplyRole::Master { offset: 7 }, None).unwrap();
    assert_eq!(facts.role, ObservedRole::Primary);
    assert_eq!(facts.write_position, Some(7));
}

#[test]
fn role_replica_in_every_state() {
    for (state, link_up) in [
        ("connected", true),
        ("connecting", false),
        ("sync", false),
        ("connect", false),
        ("handshake", false),
    ] {
        let reply = Value::Array(vec![
            bulk("slave"),
            bulk("127.0.0.1"),
            Value::Int(16379),
            bulk(state),
            Value::Int(if link_up { 3167038 } else { -1 }),
        ]);
        let role = parse_role(&reply).unwrap();
        let ReplyRole::Replica {
            master_port,
            offset,
            ..
        } = &role
        else {
            panic!("{role:?}");
        };
        assert_eq!(*master_port, 16379);
        assert_eq!(offset.is_some(), link_up);
        let info = InfoReplication {
            master_last_io_seconds_ago: Some(if link_up { 1 } else { -1 }),
            ..InfoReplication::default()
        };
        let replica = facts(&role, Some(&info)).unwrap().replica.unwrap();
        assert_eq!(replica.link_up, link_up, "{state}");
        let expected_lag = link_up.then_some(Duration::from_secs(1));
        assert_eq!(replica.lag, expected_lag, "{state}");
    }
}

#[test]
fn connected_replica_without_info_has_unknown_lag_but_a_position() {
    let role = ReplyRole::Replica {
        master_host: "h".into(),
        master_port: 1,
        state: "connected".into(),
        offset: Some(99),
    };
    let replica = facts(&role, None).unwrap().replica.unwrap();
    assert_eq!(replica.lag, None);
    assert_eq!(replica.position, Some(99));
    assert!(replica.link_up);
}

#[test]
fn sentinel_is_the_wrong_protocol() {
    let reply = Value::Array(vec![
        bulk("sentinel"),
        Value::Array(vec![bulk("resque-master"), bulk("html-fragments-master")]),
    ]);
    let role = parse_role(&reply).unwrap();
    let failure = facts(&role, None).unwrap_err();
    assert_eq!(failure.reason, FailureReason::WrongProtocol);
    assert!(failure.detail.contains("Redis Sentinel, not a data node"));
    assert!(failure.detail.contains("resque-master"));
}

#[test]
fn malformed_role_replies_are_unexpected() {
    let cases = [
        Value::Nil,
        Value::Int(1),
        bulk("master"),
        Value::Array(vec![]),
        Value::Array(vec![Value::Int(1)]),
        Value::Array(vec![bulk("master")]),
        Value::Array(vec![bulk("master"), Value::Int(-5)]),
        Value::Array(vec![bulk("master"), bulk("lots")]),
        Value::Array(vec![bulk("slave"), bulk("h")]),
        Value::Array(vec![
            bulk("slave"),
            bulk("h"),
            Value::Int(70000),
            bulk("x"),
            Value::Int(1),
        ]),
        Value::Array(vec![
            bulk("slave"),
            bulk("h"),
            Value::Int(1),
            Value::Nil,
            Value::Int(1),
        ]),
        Value::Array(vec![
            bulk("slave"),
            bulk("h"),
            Value::Int(1),
            bulk("connected"),
        ]),
        Value::Array(vec![bulk("leader"), Value::Int(1)]),
        Value::Array(vec![Value::BulkString(vec![0xff, 0xfe])]),
    ];
    for reply in cases {
        let failure = parse_role(&reply).unwrap_err();
        assert_eq!(failure.reason, FailureReason::UnexpectedReply, "{reply:?}");
    }
}

#[test]
fn role_accepts_resp3_and_string_numbers() {
    let reply = Value::Array(vec![
        Value::SimpleString("replica".into()),
        Value::VerbatimString {
            format: redis::VerbatimFormat::Text,
            text: "10.0.0.1".into(),
        },
        bulk("6379"),
        Value::SimpleString("connected".into()),
        bulk("12"),
    ]);
    let role = parse_role(&reply).unwrap();
    assert!(matches!(
        role,
        ReplyRole::Replica {
            offset: Some(12),
            master_port: 6379,
            ..
        }
    ));
}

#[test]
fn error_replies_say_what_to_do() {
    let unknown =
        redis::parse_redis_value(b"-ERR unknown command 'ROLE', with args beginning with: \r\n")
            .unwrap();
    let (code, message) = server_error(&unknown).unwrap();
    assert!(is_unknown_command(code, message));
    assert!(!is_unknown_command("ERR", "wrong number of arguments"));
    assert!(!is_unknown_command("NOPERM", "unknown command"));
    assert_eq!(server_error(&bulk("x")), None);

    let noauth = error_reply_failure("ROLE", "NOAUTH", "Authentication required.", None);
    assert_eq!(noauth.reason, FailureReason::AuthFailed);
    let wrongpass =
        error_reply_failure("AUTH", "WRONGPASS", "invalid username-password pair", None);
    assert_eq!(wrongpass.reason, FailureReason::AuthFailed);
    let noperm = error_reply_failure(
        "ROLE",
        "NOPERM",
        "User mon has no permissions to run the 'role' command",
        Some("mon"),
    );
    assert_eq!(noperm.reason, FailureReason::QueryFailed);
    assert!(noperm.detail.contains("ACL SETUSER mon +role"), "{noperm}");
    let loading = error_reply_failure(
        "ROLE",
        "LOADING",
        "Redis is loading the dataset in memory",
        None,
    );
    assert_eq!(loading.reason, FailureReason::QueryFailed);
}

const REPLICA_INFO: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n\
    master_port:16379\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:0\r\n\
    master_sync_in_progress:0\r\nslave_read_repl_offset:4242\r\nslave_repl_offset:4242\r\n\
    slave_priority:100\r\nslave_read_only:1\r\nconnected_slaves:0\r\n\
    master_replid:5ad3c4c2f6b0e0b0\r\nmaster_repl_offset:4242\r\n";

#[test]
fn info_replication_of_a_replica() {
    let info = parse_info(REPLICA_INFO);
    assert_eq!(info.role.as_deref(), Some("slave"));
    assert_eq!(info.master_last_io_seconds_ago, Some(0));
    assert_eq!(info.slave_repl_offset, Some(4242));
    let role = role_from_info(&info).unwrap();
    let replica = facts(&role, Some(&info)).unwrap().replica.unwrap();
    assert_eq!(
        replica,
        ReplicaFacts {
            lag: Some(Duration::ZERO),
            position: Some(4242),
            link_up: true
        }
    );
    let down = parse_info(&REPLICA_INFO.replace("link_status:up", "link_status:down"));
    let replica = facts(&role_from_info(&down).unwrap(), Some(&down)).unwrap();
    let replica = replica.replica.unwrap();
    assert!(!replica.link_up);
    assert_eq!(replica.lag, None);
}

#[test]
fn info_replication_of_a_master_and_of_garbage() {
    let info = parse_info("# Replication\nrole:master\nconnected_slaves:1\nslave0:ip=127.0.0.1,port=16380,state=online,offset=98,lag=0\nmaster_repl_offset:98\n");
    assert_eq!(role_from_info(&info), Ok(ReplyRole::Master { offset: 98 }));
    for text in [
        "",
        "role",
        "role:leader\n",
        "role:master\n",
        "\u{0}:\u{0}\r\n::::",
    ] {
        let failure = role_from_info(&parse_info(text)).unwrap_err();
        assert_eq!(failure.reason, FailureReason::UnexpectedReply, "{text:?}");
    }
}
